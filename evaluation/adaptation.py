"""Adapting to the scan (issue 30): the adapted model against itself unadapted, BM3D and a tuned Gaussian.

    python -m evaluation.adaptation --out docs/evaluation/adaptation [--quick]

Held-out volumes of 16 consecutive slices from ``../shared/data`` (subjects in no model's training or
validation split; a procedural phantom whose clean image is the truth, Lung_Dx-A0001 kernel B slices
24-39 and thorax-141 slices 40-55, chosen for quiet normal doses: 13 and 25 HU of flat-tissue noise,
where thorax-141's slices 110-125 have 43 HU, and a PSNR against a noisy NDCT counts removing its
noise as error) get scanner-realistic simulated noise (filters, 40-150 HU at the body centre, bowtie,
tube-current modulation, photon starvation); the bundled model adapts to each low-dose volume for its
budget, then denoises it; on an unseen texture (the simulator's noise low-passed: blotches, as iterative
reconstructions leave) the budgets are 1, 2, 5 and 10 minutes (snapshots of one 10-minute run: a shorter
run makes the same steps). Also: noise correlated across slices (an overlapping reconstruction), which
the guard must notice, and normal-dose series with nothing added, where adaptation must remove no
anatomy. Figures are whole-slice PSNR in two windows, flat-tissue noise and the low-frequency error
(the difference from the NDCT smoothed with a 4-pixel Gaussian, RMS in the body: streaks and
blotches), on four evenly spaced slices of each volume (BM3D's cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE, slice_metrics
from LDCTDenoiseLib.engine.adaptation import adapt
from LDCTDenoiseLib.engine.inference import VolumeDenoiser
from LDCTDenoiseLib.engine.options import EngineOptions
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.models.weights import find_model
from LDCTDenoiseLib.simulation import ScannerNoise, make_phantom, simulate_low_dose
from training.baselines import SIGMAS_PX, bm3d_available, bm3d_slices, estimate_noise_hu, gaussian_slices

from .config import REPOSITORY
from .data import read_slices
from .sweep import BODY_HU, LOW_FREQUENCY_SIGMA_PX

CURVE_MINUTES = (1.0, 2.0, 5.0, 10.0)
MAIN_MINUTES = 5.0


@dataclass(frozen=True)
class Case:
    name: str
    series: str | None  # None: the procedural phantom (its clean image is the truth)
    first: int = 0
    count: int = 16

    def load(self, data: Path, extra: int = 0) -> Volume:
        if self.series is None:
            return make_phantom((self.count + extra, PHANTOM_PX, PHANTOM_PX), seed=1)
        return read_slices(data, self.series, (self.first, self.first + self.count + extra))


PHANTOM_PX = 384
PHANTOM = Case("phantom (clean truth)", None)
CHEST = Case("Lung_Dx-A0001 kernel B chest (NDCT reference)", "ct/lung-pet-ct-dx/Lung_Dx-A0001/kernel-B", 24)
THORAX = Case("thorax-141 lower chest (NDCT reference)", "ct/thorax-141", 40)
NOISE = (ScannerNoise(40.0, filter="shepp-logan", cutoff=0.9, views=984, bowtie=1.5, modulation=0.5),
         ScannerNoise(80.0, filter="ramp", views=720, bowtie=1.0, modulation=0.5),
         ScannerNoise(150.0, filter="hann", cutoff=0.9, views=600, bowtie=2.0, modulation=0.3))
BLOTCHY_HU, BLOTCHY_SIGMA_PX = 40.0, 1.5  # unseen texture: low-passed noise, as iterative reconstruction leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.adaptation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "evaluation" / "adaptation")
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--quick", action="store_true", help="20-second budgets, two conditions (a check of the code)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only the cells whose 'volume, condition' contains TEXT (repeatable)")
    args = parser.parse_args(argv)
    started, made_at = time.perf_counter(), commit_and_machine()  # the code that runs is the start's commit
    model = find_model(None)
    scale = 1 / 15 if args.quick else 1.0
    main_budget, curve = [MAIN_MINUTES * scale], [b * scale for b in CURVE_MINUTES]
    rows, timings = [], []
    phantom = PHANTOM.load(args.data, extra=1)
    clean = first_slices(phantom, PHANTOM.count)
    chest, thorax = CHEST.load(args.data), THORAX.load(args.data)
    plan = [(PHANTOM, clean, f"{BLOTCHY_HU:g} HU low-pass (unseen texture)", lambda: blotchy(clean), curve)]
    if not args.quick:
        plan += [(PHANTOM, clean, "150 HU hann", lambda: simulate_low_dose(clean, NOISE[2], seed=5), main_budget),
                 (PHANTOM, clean, "80 HU ramp, slice-correlated", lambda: correlated_noise(phantom, NOISE[1]),
                  main_budget)]
        plan += [(CHEST, chest, f"{n.added_noise_hu:g} HU {n.filter}",
                  lambda n=n: simulate_low_dose(chest, n, seed=110), main_budget) for n in NOISE]
        plan += [(CHEST, chest, f"{BLOTCHY_HU:g} HU low-pass (unseen texture)", lambda: blotchy(chest), main_budget),
                 (THORAX, thorax, "80 HU ramp", lambda: simulate_low_dose(thorax, NOISE[1], seed=110), main_budget)]
    plan.append((THORAX, thorax, "normal dose, nothing added", lambda: thorax, main_budget))
    if args.only:
        plan = [cell for cell in plan if any(text in f"{cell[0].name}, {cell[2]}" for text in args.only)]
    for case, reference, condition, make, budgets in plan:
        rows += run_cell(model, case, condition, reference, make(), budgets, timings,
                         normal_dose=condition.startswith("normal dose"))
    write_report(args.out, rows, timings, time.perf_counter() - started, args.quick, made_at, args.only)
    return 0


def blotchy(ndct: Volume) -> Volume:
    """The 80 HU recipe's noise low-passed (Gaussian, 1.5 px) and rescaled to 40 HU in the body: a texture
    the bundled model never met in training (its noise came from FBP filters only)."""
    noise = simulate_low_dose(ndct, NOISE[1], seed=11).array - ndct.array
    smooth = ndimage.gaussian_filter(noise, (0, BLOTCHY_SIGMA_PX, BLOTCHY_SIGMA_PX))
    smooth *= BLOTCHY_HU / smooth[ndct.array > BODY_HU].std()
    return ndct.with_array((ndct.array + smooth).astype(np.float32))


def correlated_noise(ndct17: Volume, settings: ScannerNoise) -> Volume:
    """16 slices whose added noise is the mean of two independent draws of neighbouring slices (lag-1 r = 0.5)."""
    noisy = simulate_low_dose(ndct17, settings, seed=7)
    noise = noisy.array - ndct17.array
    shared = (noise[:-1] + noise[1:]) / np.sqrt(2)
    return first_slices(ndct17, 16).with_array((ndct17.array[:-1] + shared).astype(np.float32))


def first_slices(volume: Volume, count: int) -> Volume:
    return Volume(np.ascontiguousarray(volume.array[:count]), volume.spacing, volume.origin, volume.direction,
                  dict(volume.metadata))


def run_cell(model, case: Case, condition: str, ndct: Volume, ldct: Volume, budgets: list[float], timings: list,
             normal_dose: bool = False) -> list[dict]:
    print(f"{case.name}, {condition}: adapting up to {max(budgets):g} min", flush=True)
    evaluated = np.linspace(1, ndct.array.shape[0] - 2, 4).round().astype(int)
    reference, noisy = ndct.array[evaluated], ldct.array[evaluated]
    options = EngineOptions(adapt_minutes=max(budgets))
    adaptation = adapt(model, ldct, options, snapshot_minutes=tuple(budgets))
    outputs = {"input": noisy, "unadapted": denoise(model, noisy)}
    for minutes in budgets:
        snapshot = adaptation.snapshots.get(minutes)
        outputs[f"adapted {minutes:g} min"] = denoise(snapshot, noisy) if snapshot is not None else outputs["unadapted"]
    if not normal_dose:
        sigma = max(SIGMAS_PX, key=lambda s: mean_metric(gaussian_slices(noisy, s), reference, "psnr_soft"))
        outputs[f"Gaussian (sigma {sigma:g} px, tuned on the NDCT)"] = gaussian_slices(noisy, sigma)
        if bm3d_available():
            outputs["BM3D"] = bm3d_slices(noisy, estimate_noise_hu(noisy))
    summary = {key: adaptation.summary.get(key) for key in ("steps", "seconds_per_step", "best_step",
                                                            "neighbour_offset", "stopped_early", "notes")}
    timings.append({"case": case.name, "condition": condition, **summary})
    return [{"case": case.name, "condition": condition, "method": name, "adapted_used": adaptation.adapted,
             **measure(image, reference, noisy, normal_dose)} for name, image in outputs.items()]


def denoise(model, hu: np.ndarray) -> np.ndarray:
    """Denoised as a standard kernel: every volume here is one (Philips B and C, the phantom), and the engine's
    texture test would take the ramp filter's simulated noise, with no header, for a sharp kernel and
    keep it all (which both the adapted and the unadapted model then did, in the report at 24859e4)."""
    return VolumeDenoiser(model, EngineOptions(kernel="standard"))(hu)


def measure(image: np.ndarray, reference: np.ndarray, noisy: np.ndarray, normal_dose: bool) -> dict:
    body = reference > BODY_HU
    error = ndimage.gaussian_filter(image - reference, (0, LOW_FREQUENCY_SIGMA_PX, LOW_FREQUENCY_SIGMA_PX))
    figures = {"psnr_soft": mean_metric(image, reference, "psnr_soft"),
               "psnr_full": mean_metric(image, reference, "psnr_full"),
               "low_frequency_error_hu": float(np.sqrt(np.mean(error[body] ** 2))),
               "flat_noise_hu": flat_noise(image, reference)}
    if normal_dose:
        figures["mean_abs_change_hu"] = float(np.mean(np.abs(image - noisy)[body]))
        figures["edge_strength_ratio"] = edge_ratio(image, noisy)
    return figures


def mean_metric(image: np.ndarray, reference: np.ndarray, name: str) -> float:
    window = SOFT_TISSUE if name.endswith("soft") else FULL_RANGE
    return float(np.mean([slice_metrics(i, r, window)["psnr"] for i, r in zip(image, reference, strict=True)]))


def flat_noise(image: np.ndarray, reference: np.ndarray) -> float:
    """Std of the image minus its 7x7 local mean over flat soft tissue of the reference (noise, not anatomy)."""
    smooth = ndimage.uniform_filter(reference, (1, 9, 9))
    gradient = ndimage.generic_gradient_magnitude(ndimage.gaussian_filter(reference, (0, 2, 2)), ndimage.sobel)
    tissue = (smooth > -100) & (smooth < 150)
    flat = tissue & (gradient < np.percentile(gradient[tissue], 30))
    residual = image - ndimage.uniform_filter(image, (1, 7, 7))
    return float(residual[flat].std())


def edge_ratio(image: np.ndarray, source: np.ndarray) -> float:
    """Mean gradient magnitude of ``image`` over the source's strongest edges (top 2 %), over the source's own."""
    def gradient(a: np.ndarray) -> np.ndarray:
        smooth = ndimage.gaussian_filter(a, (0, 1, 1))
        return np.hypot(ndimage.sobel(smooth, 1), ndimage.sobel(smooth, 2))

    g_source, g_image = gradient(source), gradient(image)
    edges = g_source > np.percentile(g_source, 98)
    return float(g_image[edges].mean() / g_source[edges].mean())


def write_report(out: Path, rows: list[dict], timings: list[dict], seconds: float, quick: bool,
                 made_at: tuple[str, str], only: list[str] = ()) -> None:
    out.mkdir(parents=True, exist_ok=True)
    commit, machine = made_at
    record = {"commit": commit, "quick": quick, "only": list(only), "machine": machine, "seconds": round(seconds, 1),
              "rows": rows, "adaptation": timings}
    (out / "results.json").write_text(json.dumps(record, indent=1, default=float))
    subset = f" (only the cells matching {', '.join(repr(t) for t in only)})" if only else ""
    lines = [f"# Adapting to the scan: evaluation{' (quick)' if quick else ''}{subset}", "",
             f"Generated by `python -m evaluation.adaptation` at commit {commit} in {seconds / 60:.1f} min on "
             f"{record['machine']}. Whole-slice figures on 4 slices of each 16-slice volume; PSNR soft tissue "
             "[-160, 240] HU and full range [-1024, 3072] HU; low-frequency error: RMS in the body of the "
             "difference from the NDCT smoothed with a 4-pixel Gaussian.", "",
             "| volume | condition | method | PSNR soft | PSNR full | low-freq. error HU | flat noise HU | extra |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        extra = (f"mean abs change {row['mean_abs_change_hu']:.2f} HU, edges x{row['edge_strength_ratio']:.3f}"
                 if "mean_abs_change_hu" in row else "")
        lines.append(f"| {row['case']} | {row['condition']} | {row['method']} | {row['psnr_soft']:.2f} | "
                     f"{row['psnr_full']:.2f} | {row['low_frequency_error_hu']:.2f} | {row['flat_noise_hu']:.2f} | "
                     f"{extra} |")
    lines += ["", "| volume | condition | steps | s/step | best step | neighbour distance | stopped early | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for t in timings:
        lines.append(f"| {t['case']} | {t['condition']} | {t['steps']} | {t['seconds_per_step']} | {t['best_step']} "
                     f"| {t['neighbour_offset']} | {t['stopped_early']} | {'; '.join(t['notes'] or [])} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def commit_and_machine() -> tuple[str, str]:
    """The commit a report is made at, and the machine in words (no host name, no path)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPOSITORY).stdout.strip()
    return commit, f"{platform.machine()}, {_cpus()} CPU(s)"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
