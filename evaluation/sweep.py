"""The robustness sweep: held-out slices x reconstruction filter x added noise x streak level.

Each cell inserts scanner-realistic noise (``LDCTDenoiseLib.simulation.scanner``) into real
normal-dose slices of subjects no model was trained on, runs every method on the whole slice and
measures it against the NDCT: PSNR/SSIM in the soft-tissue window and the full range, the noise
std and the mean-HU bias in flat soft tissue (found on the NDCT), and the NDCT's own flat noise.
Outputs are cached by what made them (slice, cell, seed, method and, for models, the weights'
SHA-256), so adding a model reruns only that model.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE, slice_metrics
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.engine.kernel import series_kernel
from LDCTDenoiseLib.engine.noise_level import RULE_VERSION, flat_soft_tissue
from LDCTDenoiseLib.engine.noise_level import local_noise_hu as flat_noise_hu
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.weights import cache_dir, load_model
from LDCTDenoiseLib.simulation.scanner import ScannerNoise, scanner_noise_hu
from training.baselines import best_gaussian_sigma, bm3d_available, bm3d_slices, estimate_noise_hu, gaussian_slices

from .config import REPOSITORY, STUDY_FILE
from .weight_range import passing_weights

BODY_HU = -500.0  # the body, for the low-frequency error
LOW_FREQUENCY_SIGMA_PX = 4.0
EDGE_PERCENTILE = 99.0  # the NDCT's strongest edges in the body: bone, lung, air-skin
CACHE_VERSION = 2  # part of every cache key: raise it when the simulator or a method changes its output


@dataclass(frozen=True)
class SweepSlice:
    name: str
    series: str
    index: int
    what: str


@dataclass(frozen=True)
class Sweep:
    slices: tuple[SweepSlice, ...]
    tuning: SweepSlice
    filters: dict[str, tuple[str, float]]  # label -> (filter, cutoff)
    streaks: dict[str, dict]  # label -> electronic_std, bowtie, modulation
    noise_hu: tuple[float, ...]
    views: int
    seed: int
    models: dict[str, Path]  # name -> exported model folder
    keep_noise_hu: dict[str, float]  # name -> the engine's keep_noise_hu where the entry sets it (else the model's)
    self_ensemble: dict[str, int]  # name -> the engine's views averaged where the entry sets it (else 1)
    figure_cell: tuple[str, str, float]  # (filter, streaks, noise) of the image figure
    bm3d: bool = True
    bm3d_from_hu: float = 0.0  # BM3D runs on cells with at least this much added noise
    weight_range: tuple[str, float] | None = None  # (model, up to HU added): its correction's shares scanned

    def only(self, names: list[str]) -> Sweep:
        """The same sweep with only the models named (the weight-range scan kept where its model stays)."""
        unknown = sorted(set(names) - set(self.models))
        if unknown:
            raise InputError(f"no sweep model named {', '.join(unknown)}; the study's are: {', '.join(self.models)}")
        keep = lambda table: {name: value for name, value in table.items() if name in names}  # noqa: E731
        scanned = self.weight_range if self.weight_range and self.weight_range[0] in names else None
        return replace(self, models=keep(self.models), keep_noise_hu=keep(self.keep_noise_hu),
                       self_ensemble=keep(self.self_ensemble), weight_range=scanned)

    def cells(self) -> list[tuple[str, str, float]]:
        return [(f, s, n) for f in self.filters for s in self.streaks for n in self.noise_hu]

    def settings(self, filter_label: str, streak: str, noise_hu: float) -> ScannerNoise:
        name, cutoff = self.filters[filter_label]
        return ScannerNoise(added_noise_hu=noise_hu, filter=name, cutoff=cutoff, views=self.views,
                            **self.streaks[streak])


def load_sweep(path: Path = STUDY_FILE, quick: bool = False) -> Sweep:
    raw = yaml.safe_load(Path(path).read_text())["sweep"]
    part = raw["quick"] if quick else raw
    as_slice = lambda s: SweepSlice(s["name"], s["series"], int(s["index"]), s.get("what", ""))  # noqa: E731
    scanned = raw.get("weight_range")
    if scanned and scanned["model"] not in {m["name"] for m in raw["models"]}:
        raise InputError(f"sweep.weight_range.model {scanned['model']!r} is not among the sweep's models")
    return Sweep(
        slices=tuple(as_slice(s) for s in part.get("slices", raw["slices"])),
        tuning=as_slice(raw["tuning"]),
        filters={k: (v[0], float(v[1])) for k, v in part.get("filters", raw["filters"]).items()},
        streaks=dict(part.get("streaks", raw["streaks"])),
        noise_hu=tuple(float(n) for n in part.get("noise_hu", raw["noise_hu"])),
        views=int(raw["views"]),
        seed=int(raw["seed"]),
        models={m["name"]: REPOSITORY / m["path"] for m in raw["models"]},
        keep_noise_hu={m["name"]: float(m["keep_noise_hu"]) for m in raw["models"] if "keep_noise_hu" in m},
        self_ensemble={m["name"]: int(m["self_ensemble"]) for m in raw["models"] if "self_ensemble" in m},
        figure_cell=tuple(part.get("figure", raw["figure"])),
        bm3d=bool(part.get("bm3d", True)),
        bm3d_from_hu=float(raw.get("bm3d_from_hu", 0.0)),
        weight_range=(scanned["model"], float(scanned["up_to_hu"])) if scanned else None,
    )


@dataclass
class SlicePair:
    spec: SweepSlice
    ndct: np.ndarray
    pixel_mm: float
    flat: np.ndarray  # flat soft tissue of the NDCT
    kernel: str | None = None  # the series' ConvolutionKernel, as its header names it
    edges: np.ndarray | None = None  # the NDCT's strongest edges (``strongest_edges``)

    @property
    def ndct_flat_noise(self) -> float:
        return flat_noise_hu(self.ndct, self.flat)


def read_slice(data: Path, spec: SweepSlice) -> SlicePair:
    volume = read_volume(data / spec.series)
    ndct = np.ascontiguousarray(volume.array[spec.index], dtype=np.float32)
    return SlicePair(spec, ndct, float(volume.spacing[0]), flat_soft_tissue(ndct),
                     volume.metadata.get("convolution_kernel"), strongest_edges(ndct))


class OutputCache:
    """Arrays keyed by what made them, under the user cache folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_dir() / "evaluation-sweep"
        self.reused = self.made = 0  # the report says how much of its run time was spent making outputs

    def get(self, key: dict, make: Callable[[], np.ndarray]) -> np.ndarray:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = self.folder / f"{digest}.npy"
        if path.is_file():
            self.reused += 1
            return np.load(path)
        self.made += 1
        array = np.asarray(make(), dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            np.save(tmp, array)
        return array


def run_sweep(sweep: Sweep, data: Path, device: str = "auto", say: Callable[[str], None] = print,
              cache: OutputCache | None = None) -> dict:
    """Every cell of every slice through every method; returns rows, the NDCT's noise, the settings."""
    cache = cache or OutputCache()
    pairs = [read_slice(data, spec) for spec in sweep.slices]
    tuning = read_slice(data, sweep.tuning)
    models = {name: load_model(path) for name, path in sweep.models.items()}
    # fp32 on every device: the figures (and the cached outputs) must not depend on a CPU's bf16 or a GPU's autocast
    denoisers = {name: VolumeDenoiser(model, EngineOptions(device=device, precision="fp32",
                                                           keep_noise_hu=sweep.keep_noise_hu.get(name),
                                                           self_ensemble=sweep.self_ensemble.get(name, 1)))
                 for name, model in models.items()}
    scanned, up_to_hu = sweep.weight_range or (None, 0.0)
    whole = VolumeDenoiser(models[scanned], EngineOptions(device=device, precision="fp32", keep_noise_hu=0.0)) \
        if scanned else None
    use_bm3d = sweep.bm3d and bm3d_available()
    rows, sigmas, figure, shares = [], {}, {}, []
    for filter_label, streak, noise_hu in sweep.cells():
        settings = sweep.settings(filter_label, streak, noise_hu)
        cell = {"filter": filter_label, "streak": streak, "noise_hu": noise_hu}
        tuning_ldct = _low_dose(cache, sweep, tuning, settings)
        sigma = best_gaussian_sigma([(tuning_ldct[None], tuning.ndct[None])])
        sigmas[f"{filter_label}/{streak}/{noise_hu:g}"] = sigma
        say(f"{filter_label} filter, {streak} streaks, {noise_hu:g} HU (Gaussian sigma {sigma} px)")
        for pair in pairs:
            ldct = _low_dose(cache, sweep, pair, settings)
            outputs = {"LDCT": ldct, "Gaussian": gaussian_slices(ldct[None], sigma)[0]}
            key = {"slice": [pair.spec.series, pair.spec.index], **settings.to_dict(), "seed": sweep.seed,
                   "version": CACHE_VERSION}
            if use_bm3d and noise_hu >= sweep.bm3d_from_hu:
                outputs["BM3D"] = cache.get({**key, "method": "bm3d"}, partial(_bm3d, ldct))
            for name, denoiser in denoisers.items():
                outputs[name] = _model_output(cache, key, name, denoiser, ldct, pair.kernel)
            rows += [{"slice": pair.spec.name, **cell, "method": method, **measure(image, pair)}
                     for method, image in outputs.items()]
            if whole is not None and 10 <= noise_hu <= up_to_hu:
                correction = _model_output(cache, key, scanned, whole, ldct, pair.kernel) - ldct
                keep = _keep_noise_hu(denoisers[scanned], ldct, pair.kernel)
                shares.append({"slice": pair.spec.name, **cell, **passing_weights(
                    ldct, correction, pair.ndct, pair.flat, keep, outputs.get("BM3D"))})
            if (filter_label, streak, noise_hu) == sweep.figure_cell:
                figure[pair.spec.name] = {"NDCT": pair.ndct, **outputs}
    return {
        "rows": rows,
        "ndct_flat_noise_hu": {p.spec.name: p.ndct_flat_noise for p in pairs},
        "kernels": {p.spec.name: p.kernel for p in pairs},
        "slices": [vars(p.spec) for p in pairs],
        "gaussian_sigma_px": sigmas,
        "bm3d": use_bm3d,
        "bm3d_from_hu": sweep.bm3d_from_hu,
        "figure_cell": sweep.figure_cell,
        "figure_images": figure,
        "outputs": {"made": cache.made, "reused": cache.reused},
        "weight_range": {"model": scanned, "cells": shares} if scanned else None,
        "models": {name: {"path": str(sweep.models[name].relative_to(REPOSITORY)),
                          "sha256": model.manifest.get("sha256", ""),
                          "keep_noise_hu": denoisers[name].options.keep_noise_hu,  # None: follows the kernel
                          "self_ensemble": denoisers[name].options.self_ensemble} for name, model in models.items()},
    }


def measure(image: np.ndarray, pair: SlicePair) -> dict[str, float]:
    soft, full = slice_metrics(image, pair.ndct, SOFT_TISSUE), slice_metrics(image, pair.ndct, FULL_RANGE)
    return {"psnr_soft": soft["psnr"], "ssim_soft": soft["ssim"], "psnr_full": full["psnr"],
            "ssim_full": full["ssim"], "flat_noise_hu": flat_noise_hu(image, pair.flat),
            "bias_hu": float((image[pair.flat] - pair.ndct[pair.flat]).mean()),
            "low_frequency_error_hu": low_frequency_error_hu(image, pair.ndct),
            **({"edge_gradient": edge_gradient(image, pair.edges)} if pair.edges is not None else {})}


def low_frequency_error_hu(image: np.ndarray, ndct: np.ndarray) -> float:
    """RMS in the body of the difference from the NDCT smoothed with a 4-pixel Gaussian: streaks and blotches."""
    error = ndimage.gaussian_filter((image - ndct).astype(np.float64), LOW_FREQUENCY_SIGMA_PX)
    return float(np.sqrt(np.mean(error[ndct > BODY_HU] ** 2)))


def strongest_edges(ndct: np.ndarray) -> np.ndarray:
    """The NDCT's top 1 % gradient pixels in (and just around) the body: where the kernel's resolution shows."""
    gradient, body = _gradient(ndct), ndct > BODY_HU
    edges = gradient > np.percentile(gradient[body], EDGE_PERCENTILE)
    return edges & ndimage.binary_dilation(body, iterations=3)


def edge_gradient(image: np.ndarray, edges: np.ndarray) -> float:
    """Mean gradient magnitude (HU/px, 1-px Gaussian first) on ``edges``: a wider edge has a smaller one."""
    return float(_gradient(image)[edges].mean())


def _gradient(image: np.ndarray) -> np.ndarray:
    return np.hypot(*np.gradient(ndimage.gaussian_filter(image.astype(np.float64), 1.0)))


def _model_output(cache: OutputCache, key: dict, name: str, denoiser: VolumeDenoiser, ldct: np.ndarray,
                  kernel: str | None) -> np.ndarray:
    """The denoised slice, keyed by the weights, the keep-noise it gets and the rule, and its views where set."""
    views = denoiser.options.self_ensemble  # in the key only where it is set: older outputs stay valid
    return cache.get({**key, "model": denoiser.model.manifest.get("sha256", name),
                      "keep_noise_hu": _keep_noise_hu(denoiser, ldct, kernel), "keep_rule": RULE_VERSION,
                      **({"self_ensemble": views} if views > 1 else {})},
                     partial(_denoised, denoiser, ldct, kernel))


def _keep_noise_hu(denoiser: VolumeDenoiser, ldct: np.ndarray, kernel: str | None) -> float:
    """The keep-noise the engine gives this slice of a series with this ConvolutionKernel."""
    return denoiser.keep_for(series_kernel(ldct[None], denoiser.options.kernel, kernel).kind)


def _bm3d(ldct: np.ndarray) -> np.ndarray:
    return bm3d_slices(ldct[None], estimate_noise_hu(ldct[None]))[0]


def _denoised(denoiser: VolumeDenoiser, ldct: np.ndarray, kernel: str | None) -> np.ndarray:
    return denoiser(ldct[None], header_kernel=kernel)[0]


def _low_dose(cache: OutputCache, sweep: Sweep, pair: SlicePair, settings: ScannerNoise) -> np.ndarray:
    key = {"slice": [pair.spec.series, pair.spec.index], **settings.to_dict(), "seed": sweep.seed, "method": "ldct",
           "version": CACHE_VERSION}
    seed = np.random.default_rng([sweep.seed, pair.spec.index, zlib.crc32(json.dumps(key, sort_keys=True).encode())])

    def simulate() -> np.ndarray:
        return pair.ndct + scanner_noise_hu(pair.ndct, pair.pixel_mm, settings, seed)

    return cache.get(key, simulate)
