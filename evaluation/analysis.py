"""Run the study: tune the Gaussian, simulate each case at each dose, run every method, measure.

Per case and dose: every method's output against the NDCT in every region (PSNR, SSIM, RMSE per
slice in two windows, HU densities), plus -- on the full study -- the same against a rigidly
moved NDCT without and with registration, to show what an unaligned reference does to the figures.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.compare.alignment import describe_transform
from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE
from LDCTDenoiseLib.compare.report import ComparisonReport, compare
from training.baselines import best_gaussian_sigma

from .config import Study
from .data import Case, load_case, low_dose, moved, read_slices
from .methods import Method, build_methods


@dataclass
class Panel:
    """One slice of every image, for the figure: the NDCT, the low-dose input and each method."""

    slice_index: int
    images: dict[str, np.ndarray]
    zoom: tuple[slice, slice]  # rows, columns of the zoomed region
    zoom_region: str


@dataclass
class CaseResult:
    case: Case
    dose: float
    report: ComparisonReport
    panel: Panel
    noise_std_hu: float  # of LDCT - NDCT inside the body
    unaligned: list[dict] = field(default_factory=list)


@dataclass
class StudyResult:
    study: Study
    methods: list[Method]
    gaussian_sigma_px: float
    results: list[CaseResult]


def run_study(study: Study, data: Path, device: str = "auto",
              say: Callable[[str], None] = print) -> StudyResult:
    say(f"tuning the Gaussian filter on {study.tuning_series}")
    tuning = read_slices(data, study.tuning_series, study.tuning_slices)
    pairs = [(low_dose(tuning, study, dose, _stream("tuning", dose)).array, tuning.array) for dose in study.doses]
    sigma = best_gaussian_sigma(pairs)
    methods = build_methods(study.methods, sigma, device)
    results = []
    for spec in study.cases:
        case = load_case(data, spec)
        for dose in study.doses:
            say(f"{case.name}: {len(case.ndct.array)} slices at {dose:.0%} dose")
            ldct = low_dose(case.ndct, study, dose, _stream(case.name, dose))
            outputs = {}
            for method in methods:
                if method.available:
                    say(f"  {method.name}")
                    outputs[method.name] = case.ndct.with_array(
                        method(ldct.array, case.ndct.metadata.get("convolution_kernel")))
            report = compare(case.ndct, outputs, case.regions)
            result = CaseResult(case, dose, report, _panel(case, outputs),
                                float(np.std((ldct.array - case.ndct.array)[case.body.mask])))
            if study.register_unaligned:
                result.unaligned = _unaligned(study, case, outputs)
            results.append(result)
    return StudyResult(study, methods, sigma, results)


def _stream(name: str, dose: float) -> int:
    """A stable random stream per case and dose: adding a case changes no other case's noise."""
    return zlib.crc32(f"{name}|{dose:.4f}".encode())


def _panel(case: Case, outputs: dict) -> Panel:
    region = case.regions[0]  # the first study region is zoomed
    touched = np.flatnonzero(region.mask.any(axis=(1, 2)))
    k = int(touched[len(touched) // 2])
    rows, columns = np.nonzero(region.mask[k])
    centre_r, centre_c = int(rows.mean()), int(columns.mean())
    half = 48
    zoom = (slice(max(centre_r - half, 0), centre_r + half), slice(max(centre_c - half, 0), centre_c + half))
    images = {"NDCT": case.ndct.array[k], **{name: volume.array[k] for name, volume in outputs.items()}}
    return Panel(k, images, zoom, region.name)


def _unaligned(study: Study, case: Case, outputs: dict) -> list[dict]:
    """Soft-tissue figures in the body against the moved NDCT, unregistered and rigidly registered."""
    moving, motion = moved(case.ndct, study.rotation_deg, study.shift_mm)
    applied = describe_transform(motion)
    compared = {name: outputs[name] for name in ("LDCT", study.proposed) if name in outputs}
    rows = []
    for registration in ("none", "rigid"):
        report = compare(moving, compared, [case.body], registration=registration)
        for means in report.regions[0].metrics["means"]:
            if means["window"] == SOFT_TISSUE.label:
                rows.append({"registration": registration, "method": means["method"], "psnr": means["psnr"],
                             "ssim": means["ssim"], "rmse_hu": means["rmse_hu"],
                             "recovered": report.alignment.transform, "applied": applied})
    return rows
