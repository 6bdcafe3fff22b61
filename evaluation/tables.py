"""Tables like the paper's Tables 3 (regions) and 4 (ablations), with paired t-tests against the
proposed method: ``*`` p < 0.05, ``**`` p < 0.01 (paired over slices; pooled over regions for means)."""

from __future__ import annotations

import numpy as np

from LDCTDenoiseLib.comparison import paired_t_tests
from LDCTDenoiseLib.metrics import Window

from .analysis import CaseResult
from .data import BODY

COLUMNS = (("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"), ("RMSE (HU)", "rmse_hu", "{:.1f}"))


def significance(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def slice_rows(result: CaseResult, window: Window, regions: list[str] | None = None) -> list[dict]:
    """Per-slice rows of one window, for the named regions (all study regions when None), in a fixed order."""
    rows = []
    for region in result.report.regions:
        name = region.region.name
        if (regions is None and name != BODY) or (regions is not None and name in regions):
            rows += [{**row, "region": name} for row in region.metrics["slices"] if row["window"] == window.label]
    return rows


def summary(rows: list[dict], methods: list[str], proposed: str) -> list[dict]:
    """Mean +- std per method over the rows, with each metric's p against the proposed method."""
    tests = {(t["a"], t["b"]): t for t in paired_t_tests(rows)}
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        entry = {"method": method, "n": len(mine)}
        for _, key, _ in COLUMNS:
            values = np.array([r[key] for r in mine])
            entry[key], entry[f"{key}_std"] = float(values.mean()), float(values.std())
            test = tests.get((method, proposed)) or tests.get((proposed, method))
            entry[f"{key}_p"] = float("nan") if test is None else test[f"{key}_p"]
        out.append(entry)
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
    """Table 3 for one case and dose: each region, then the mean over the case's regions."""
    lines = []
    names = [r.region.name for r in result.report.regions if r.region.name != BODY]
    entries = []
    for name in [*names, None]:
        rows = slice_rows(result, window, [name] if name else None)
        for entry in summary(rows, methods, proposed):
            label = name or "mean of regions"
            method = f"**{entry['method']}**" if entry["method"] == proposed else entry["method"]
            entries.append({**entry, "row": f"{label}: {method}"})
    lines += markdown(entries, proposed, label="region: method")
    return lines
