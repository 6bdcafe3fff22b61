"""The comparison report: regions, the NDCT on the LDCT grid, metrics and HU densities, written out.

``compare`` does the work host-independently (the Slicer panel calls it too); ``write_report``
writes ``metrics.csv`` (means per region, window and method), ``slices.csv``, ``densities.csv``,
``t_tests.csv``, ``report.json`` (everything, including the registration), ``table.md`` (the
paper's Table 3 layout) and one density figure per region (the paper's Figure 5 style). The whole
folder appears at once or not at all.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder
from ..errors import InputError, OutputError
from ..io import Volume, read_volume
from ..optional import optional_import
from .alignment import Alignment, align, check_ct, grid_image
from .comparison import compare_in_region
from .density import Densities, hu_densities
from .metrics import DEFAULT_WINDOWS, Window
from .roi import Box, Region, body_mask, box_region, hu_range_mask, labelmap_mask

sitk = optional_import("SimpleITK")

REFERENCE = "NDCT"
OFF_SCALE_JS = 0.5  # bits: a density curve further than this from the reference does not set the plot's axis


@dataclass
class RegionResult:
    region: Region
    metrics: dict
    densities: Densities


@dataclass
class ComparisonReport:
    methods: list[str]
    alignment: Alignment
    regions: list[RegionResult]
    windows: tuple[Window, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return self.alignment.warnings


@dataclass(frozen=True)
class RegionSpec:
    """A region still to be put on a grid: ``build(grid, ndct_on_grid)`` makes its mask.

    HU-range regions are taken from the NDCT (on the LDCT grid), not from a noisy volume: selecting
    voxels by their noisy HU would bias every figure of that region.
    """

    name: str
    build: Callable[[Volume, Volume], Region]


def parse_roi(text: str) -> RegionSpec:
    """``NAME=box:CX,CY,CZ:SX,SY,SZ[:RAS]``, ``NAME=bounds:X0,X1,Y0,Y1,Z0,Z1[:RAS]``,
    ``NAME=label:PATH[:VALUE]``, ``NAME=hu:LOW,HIGH`` (NDCT HU, inside the body) or ``NAME=body:all``."""
    name, _, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    if not name or not rest:
        raise InputError(f"region {text!r}: write NAME=box:CX,CY,CZ:SX,SY,SZ, NAME=bounds:..., NAME=label:PATH "
                         "or NAME=hu:LOW,HIGH")
    parts = rest.split(":")
    if kind in ("box", "bounds"):
        coordinates = parts.pop().upper() if parts[-1].upper() in ("LPS", "RAS") else "LPS"
        numbers = [_numbers(p, text) for p in parts]
        box = Box.from_center_size(numbers[0], numbers[1], coordinates) if kind == "box" and len(numbers) == 2 \
            else Box.from_bounds(numbers[0], coordinates) if kind == "bounds" and len(numbers) == 1 else None
        if box is None:
            raise InputError(f"region {text!r}: box:CX,CY,CZ:SX,SY,SZ or bounds:X0,X1,Y0,Y1,Z0,Z1 (mm)")
        description = f"{box.describe()} (given in {coordinates})"
        return RegionSpec(name, lambda grid, _: box_region(name, grid, box, description))
    if kind == "label":
        path, _, value = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
        label = int(value) if value else None
        labels = read_volume(path)
        description = f"labelmap {path}" + (f" label {label}" if label is not None else " (non-zero)")
        return RegionSpec(name, lambda grid, _: Region(name, labelmap_mask(grid, labels, label), description))
    if kind == "body":
        return body_region(name)
    if kind == "hu":
        low, high = _numbers(rest, text)
        return RegionSpec(name, lambda _, ndct: Region(name, hu_range_mask(ndct, low, high),
                                                       f"{low:g}..{high:g} HU of the NDCT inside the body"))
    raise InputError(f"region {text!r}: the kind must be box, bounds, label, hu or body; got {kind!r}")


def body_region(name: str = "body") -> RegionSpec:
    """The whole patient on the NDCT (largest region above -500 HU, holes filled): the default region."""
    return RegionSpec(name, lambda _, ndct: Region(name, body_mask(ndct.array), "the body (NDCT above -500 HU, "
                                                   "largest connected region, holes filled)"))


def compare(ndct: Volume, volumes: dict[str, Volume], regions: list[Region | RegionSpec], registration: str = "none",
            windows: tuple[Window, ...] = DEFAULT_WINDOWS, seed: int = 0,
            stage: Callable[[str], None] | None = None) -> ComparisonReport:
    """Every volume against the NDCT in every region. Volumes share the first one's grid (the LDCT's).

    ``stage`` hears what is being done (registration can take a minute), for a status line.
    """
    stage = stage or (lambda text: None)
    if not volumes or not regions:
        raise InputError("give at least one volume to compare and one region")
    if REFERENCE in volumes:
        raise InputError(f"{REFERENCE!r} names the reference; call the compared volumes otherwise")
    grid = next(iter(volumes.values()))
    for name, volume in volumes.items():
        check_ct(volume, name)
        _check_same_grid(grid, volume, name)
    stage("registering the NDCT to the compared volumes" if registration != "none" else "resampling the NDCT")
    alignment = align(ndct, grid, registration, seed)
    covered = _coverage(ndct, grid, alignment)
    notes = []
    results = []
    for item in regions:
        region = item.build(grid, alignment.volume) if isinstance(item, RegionSpec) else item
        notes.extend(region.notes)
        mask = region.mask & covered
        if not mask.any():
            raise InputError(f"region {region.name} lies outside the NDCT's field of view")
        if mask.sum() < region.mask.sum():
            notes.append(f"region {region.name}: {region.mask.sum() - mask.sum()} voxels outside the NDCT left out")
        arrays = {name: v.array for name, v in volumes.items()}
        stage(f"metrics in {region.name}")
        metrics = compare_in_region(arrays, alignment.volume.array, mask, windows)
        stage(f"HU density curves in {region.name}")
        samples = {REFERENCE: alignment.volume.array[mask], **{n: a[mask] for n, a in arrays.items()}}
        results.append(RegionResult(Region(region.name, mask, region.description), metrics,
                                    hu_densities(samples, reference=REFERENCE, seed=seed)))
    return ComparisonReport(list(volumes), alignment, results, windows, notes)


def write_report(report: ComparisonReport, out: str | Path, inputs: dict | None = None) -> list[Path]:
    """All outputs into a new folder ``out`` (created whole, or not at all)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out} exists and is not an empty folder; choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        write_csv(tmp / "metrics.csv", [{"region": r.region.name, **m} for r in report.regions
                                         for m in r.metrics["means"]])
        write_csv(tmp / "slices.csv", [{"region": r.region.name, **row} for r in report.regions
                                        for row in r.metrics["slices"]])
        write_csv(tmp / "t_tests.csv", [{"region": r.region.name, **t} for r in report.regions
                                         for t in r.metrics["t_tests"]])
        write_csv(tmp / "densities.csv", [{"region": r.region.name, "bandwidth_hu": r.densities.bandwidth_hu,
                                            **c.summary()} for r in report.regions for c in r.densities.curves])
        (tmp / "report.json").write_text(json.dumps(_as_json(report, inputs or {}), indent=1, default=json_default))
        (tmp / "table.md").write_text(table_markdown(report))
        for result in report.regions:
            plot_densities(result.densities, f"{result.region.name}", tmp / f"density-{slug(result.region.name)}.png")
    return sorted(out.iterdir())


def table_markdown(report: ComparisonReport) -> str:
    """Table 3 of the paper: one row per region and method, PSNR / SSIM / RMSE per window."""
    lines = []
    for window in report.windows:
        lines += [f"### {window.label} (data range {window.data_range:g} HU)", "",
                  "| region | method | PSNR (dB) | SSIM | RMSE (HU) | NRMSE |", "|---|---|---|---|---|---|"]
        for result in report.regions:
            for m in result.metrics["means"]:
                if m["window"] == window.label:
                    lines.append(f"| {result.region.name} | {m['method']} | {m['psnr']:.2f} ± {m['psnr_std']:.2f} | "
                                 f"{m['ssim']:.4f} ± {m['ssim_std']:.4f} | {m['rmse_hu']:.2f} | {m['nrmse']:.4f} |")
        lines.append("")
    lines.append("Means ± std over the slices each region touches; t-tests between methods in t_tests.csv.")
    return "\n".join(lines) + "\n"


def plot_densities(densities: Densities, title: str, path: Path) -> None:
    """HU density curves in the style of the paper's Figure 5: NDCT as the reference, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    scaled = [c for c in densities.curves if c.js_divergence is None or c.js_divergence <= OFF_SCALE_JS]
    for index, curve in enumerate(densities.curves):
        is_reference = curve.name == densities.reference
        label = curve.name if is_reference else f"{curve.name} (JS {curve.js_divergence:.3f})"
        if curve not in scaled:
            label += ", off scale"
        axes.plot(curve.hu, curve.density, label=label, color="black" if is_reference else f"C{index}",
                  linewidth=2.2 if is_reference else 1.4, linestyle="--" if is_reference else "-")
    # The grid holds every voxel; the axis shows where the mass of the curves lies (0.5-99.5 %), leaving
    # out curves that share almost nothing with the reference so they do not squeeze the others.
    low, high = zip(*(_mass_interval(c.hu, c.density) for c in scaled))
    margin = 0.1 * (max(high) - min(low))
    axes.set_xlim(min(low) - margin, max(high) + margin)
    axes.set_xlabel("HU")
    axes.set_ylabel("probability density")
    axes.set_title(f"{title}: HU density (KDE, bandwidth {densities.bandwidth_hu:.1f} HU)", fontsize=10)
    axes.legend(frameon=False, fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _mass_interval(hu: np.ndarray, density: np.ndarray, tail: float = 0.005) -> tuple[float, float]:
    cumulative = np.cumsum(density)
    cumulative /= cumulative[-1]
    return float(np.interp(tail, cumulative, hu)), float(np.interp(1 - tail, cumulative, hu))


def _as_json(report: ComparisonReport, inputs: dict) -> dict:
    return {
        "inputs": inputs, "reference": REFERENCE, "methods": report.methods,
        "windows": [{"label": w.label, "low": w.low, "high": w.high, "data_range": w.data_range}
                    for w in report.windows],
        "alignment": report.alignment.to_dict(), "warnings": report.warnings, "notes": report.notes,
        "regions": [{
            "name": r.region.name, "description": r.region.description, "voxels": r.region.voxels,
            "means": r.metrics["means"], "t_tests": r.metrics["t_tests"], "slices": r.metrics["slices"],
            "density": {"bandwidth_hu": r.densities.bandwidth_hu, "curves": [c.summary() for c in r.densities.curves],
                        "hu_grid": r.densities.curves[0].hu, "values": {c.name: c.density for c in r.densities.curves}},
        } for r in report.regions],
    }


def _coverage(ndct: Volume, grid: Volume, alignment: Alignment) -> np.ndarray:
    """Voxels of the grid that the (registered) NDCT actually covers."""
    ones = grid_image(ndct) + 1
    transform = alignment.sitk_transform or sitk.Transform()
    return sitk.GetArrayFromImage(sitk.Resample(ones, grid_image(grid), transform, sitk.sitkNearestNeighbor, 0)) > 0


def _check_same_grid(grid: Volume, volume: Volume, name: str) -> None:
    same = (volume.array.shape == grid.array.shape and np.allclose(volume.spacing, grid.spacing, atol=1e-4)
            and np.allclose(volume.origin, grid.origin, atol=1e-3) and np.allclose(volume.direction, grid.direction,
                                                                                  atol=1e-5))
    if not same:
        raise InputError(f"{name} is not on the grid of the first volume (shape, spacing, origin or direction "
                         "differ); compared volumes must share the LDCT's grid (a denoised output does)")


def _numbers(text: str, context: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"region {context!r}: {text!r} is not a list of numbers") from None


def slug(name: str) -> str:
    """A file-name-safe form of a region or case name."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "region"


def json_default(value):
    """numpy values as plain JSON numbers and lists (``json.dumps(default=...)``)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value)}")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts as CSV, the first row's keys as the header."""
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
