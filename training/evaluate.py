"""Held-out evaluation of a model: PSNR/SSIM/RMSE against the NDCT, beside the input and a Gaussian filter.

Each test patient's NDCT gets projection-domain low-dose noise (dose and seed stated in the
result); the model denoises whole slices with the inference engine the module uses. The Gaussian
filter's sigma is the one that maximises soft-tissue PSNR on the validation patients (or, with
none, on the evaluated ones -- which favours the filter; the result says which). Paired t-tests
across slices compare the model with each baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from LDCTDenoiseLib.compare.comparison import METRICS, means_by_method, paired_t_tests
from LDCTDenoiseLib.compare.metrics import DEFAULT_WINDOWS, slice_metrics
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io.dicom_read import folder_kernel
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import MANIFEST_NAME, LoadedModel, load_model

from .baselines import best_gaussian_sigma, gaussian_slices
from .checkpoint import CHECKPOINTS, is_exported_model, load_checkpoint
from .config import TrainConfig
from .data import Patient, dataset_split
from .export import generator_from_checkpoint
from .volumes import SeriesCache, evenly_spaced, projection_settings


def load_any_model(source: str | Path) -> LoadedModel:
    """An exported model folder/manifest, a checkpoint file, or a run folder (latest checkpoint)."""
    source = Path(source).expanduser()
    if is_exported_model(source):
        return load_model(source)
    if source.is_dir() and not (source / CHECKPOINTS).is_dir():
        raise InputError(f"{source} is neither a model folder ({MANIFEST_NAME}) nor a run folder ({CHECKPOINTS}/)")
    state = load_checkpoint(source)
    manifest = {
        "config": state["config"]["model"],
        "normalization": state["normalization"],
        "provenance": {"checkpoint": state["path"], "stage": state["stage"], "steps": state["step"]},
    }
    return LoadedModel(
        generator_from_checkpoint(state),
        Normalization.from_dict(state["normalization"]),
        manifest,
        name=f"{state['stage']} step {state['step']}",
    )


def evaluate(
    model: LoadedModel,
    config: TrainConfig,
    split: str = "test",
    dose_fraction: float | None = None,
    seed: int | None = None,
    max_slices: int = 0,
    device: str = "auto",
    quiet: bool = False,
) -> dict:
    """Per-slice and mean metrics of input, Gaussian filter and model on one split's patients."""
    dose = dose_fraction if dose_fraction is not None else config.validation.dose_fraction
    seed = seed if seed is not None else config.validation.seed
    splits = dataset_split(config.data)
    if not splits[split]:
        raise InputError(f"the dataset has no {split} patients; choose another split or change data.{split}")
    cache = SeriesCache(config.data.cache, config.data.simulation_workers, quiet)
    settings = projection_settings(config.noise, dose)
    tuning = splits["validation"] or splits[split]
    sigma = best_gaussian_sigma([_pair(p, cache, settings, seed, max_slices) for p in tuning])
    denoiser = VolumeDenoiser(model, EngineOptions(device=device, precision="fp32"))  # the same figures on any machine
    rows = []
    for patient in splits[split]:
        noisy, clean = _pair(patient, cache, settings, seed, max_slices)
        methods = {"input": noisy, "gaussian": gaussian_slices(noisy, sigma),
                   "model": denoiser(noisy, header_kernel=folder_kernel(patient.ndct))}
        for k in range(clean.shape[0]):
            for window in DEFAULT_WINDOWS:
                for method, volume in methods.items():
                    rows.append(
                        {
                            "patient": patient.name,
                            "slice": k,
                            "window": window.label,
                            "data_range": window.data_range,
                            "method": method,
                            **slice_metrics(volume[k], clean[k], window),
                        }
                    )
    return {
        "model": model.describe(),
        "split": split,
        "patients": [p.name for p in splits[split]],
        "low_dose": {"kind": "projection-poisson", "seed": seed, **settings.to_dict()},
        "gaussian_sigma_px": sigma,
        "gaussian_sigma_tuned_on": "validation" if splits["validation"] else split,
        "summary": summarise(rows),
        "slices": rows,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean +- std per window and method, and paired t-tests of the model against each baseline."""
    tests = {(t["window"], t["a"], t["b"]): t for t in paired_t_tests(rows)}
    summary = means_by_method(rows)
    for entry in summary:
        test = tests.get((entry["window"], entry["method"], "model"))
        if test is not None and entry["slices"] > 1:
            entry.update({f"{metric}_p_vs_model": test[f"{metric}_p"] for metric in METRICS})
    return summary


def markdown_table(summary: list[dict]) -> str:
    lines = ["| window | method | PSNR (dB) | SSIM | RMSE (HU) | p (PSNR, vs model) |", "|---|---|---|---|---|---|"]
    for e in summary:
        p = e.get("psnr_p_vs_model")
        lines.append(
            f"| {e['window']} | {e['method']} | {e['psnr']:.2f} ± {e['psnr_std']:.2f} | "
            f"{e['ssim']:.4f} ± {e['ssim_std']:.4f} | {e['rmse_hu']:.1f} | {'' if p is None else f'{p:.2g}'} |"
        )
    return "\n".join(lines)


def _pair(patient: Patient, cache: SeriesCache, settings, seed: int, max_slices: int) -> tuple[np.ndarray, np.ndarray]:
    clean, noisy = cache.ndct(patient).hu, cache.simulated_ldct(patient, settings, seed).hu
    keep = evenly_spaced(clean.shape[0], max_slices)
    return np.asarray(noisy[keep], dtype=np.float32), np.asarray(clean[keep], dtype=np.float32)
