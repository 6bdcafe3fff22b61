"""Tables like the paper's Tables 3 (regions) and 4 (ablations), with paired t-tests against the
proposed method: ``*`` p < 0.05, ``**`` p < 0.01 (paired over slices; pooled over regions for means)."""

from __future__ import annotations

import numpy as np

from LDCTDenoiseLib.compare.comparison import means_by_method, paired_t_tests
from LDCTDenoiseLib.compare.metrics import Window

from .analysis import CaseResult
from .data import BODY

COLUMNS = (("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"), ("RMSE (HU)", "rmse_hu", "{:.1f}"))
MAX_CLIPPED = 0.05  # a region whose NDCT lies outside a window more than this is not measured in it


def clipped_fraction(result: CaseResult, region: str, window: Window) -> float:
    """The share of the region's NDCT voxels outside the window (clipping would hide their errors)."""
    mask = next(r.region.mask for r in result.report.regions if r.region.name == region)
    hu = result.case.ndct.array[mask]
    return float(np.mean((hu < window.low) | (hu > window.high)))


def usable_regions(result: CaseResult, window: Window) -> tuple[list[str], list[str]]:
    """The study regions measured in this window, and notes on those left out."""
    kept, notes = [], []
    for region in (r.region.name for r in result.report.regions if r.region.name != BODY):
        share = clipped_fraction(result, region, window)
        if share > MAX_CLIPPED:
            notes.append(f"{region} ({share:.0%} of its NDCT voxels outside the window)")
        else:
            kept.append(region)
    return kept, notes


def significance(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def slice_rows(result: CaseResult, window: Window, regions: list[str]) -> list[dict]:
    """Per-slice rows of one window for the named regions, in a fixed order (pairs line up across methods)."""
    rows = []
    for region in result.report.regions:
        if region.region.name in regions:
            rows += [{**row, "region": region.region.name} for row in region.metrics["slices"]
                     if row["window"] == window.label]
    return rows


def summary(rows: list[dict], methods: list[str], proposed: str) -> list[dict]:
    """Mean +- std per method over the rows, with each metric's p against the proposed method."""
    rows = [r for r in rows if r["method"] in methods]
    tests = {(t["a"], t["b"]): t for t in paired_t_tests(rows)}
    out = []
    for entry in means_by_method(rows):
        test = tests.get((entry["method"], proposed)) or tests.get((proposed, entry["method"]))
        p_values = {f"{key}_p": float("nan") if test is None else test[f"{key}_p"] for _, key, _ in COLUMNS}
        out.append({**entry, "n": entry["slices"], **p_values})
    return out


def markdown(entries: list[dict], proposed: str, label: str = "method") -> list[str]:
    header = f"| {label} | n | " + " | ".join(name for name, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (2 + len(COLUMNS))]
    for e in entries:
        cells = []
        for _, key, fmt in COLUMNS:
            mark = "" if e["method"] == proposed else significance(e[f"{key}_p"])
            cells.append(f"{fmt.format(e[key])} ± {fmt.format(e[f'{key}_std'])}{(' ' + mark) if mark else ''}")
        name = f"**{e['method']}**" if e["method"] == proposed else e["method"]
        lines.append(f"| {e.get('row', name)} | {e['n']} | " + " | ".join(cells) + " |")
    return lines


def region_table(result: CaseResult, window: Window, methods: list[str], proposed: str) -> list[str]:
    """Table 3 for one case and dose: each region measurable in the window, then their mean."""
    names, left_out = usable_regions(result, window)
    entries = []
    for label, regions in [*((name, [name]) for name in names), ("mean of regions", names)]:
        for entry in summary(slice_rows(result, window, regions), methods, proposed):
            method = f"**{entry['method']}**" if entry["method"] == proposed else entry["method"]
            entries.append({**entry, "row": f"{label}: {method}"})
    lines = markdown(entries, proposed, label="region: method") if names else ["No region lies inside this window."]
    if left_out:
        lines += ["", "Not measured in this window (clipping would hide errors): " + "; ".join(left_out) + "."]
    return lines
