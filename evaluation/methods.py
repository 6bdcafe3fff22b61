"""The compared methods, built from the study's method entries. A method maps a low-dose volume (HU)
to a denoised one and says how it was parameterised. New systems (WGAN-VGG, U-Net, StructKPN...)
enter as another ``model`` entry with their exported weights, or as a new kind here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.models.weights import load_model
from training.baselines import bm3d_available, bm3d_slices, estimate_noise_hu, gaussian_slices
from training.checkpoint import is_exported_model

from .config import MethodSpec


@dataclass
class Method:
    """A named denoiser; ``available`` is False (with ``why``) when it cannot run on this machine."""

    name: str
    kind: str
    available: bool = True
    why: str = ""
    parameters: dict = field(default_factory=dict)
    seconds: float = 0.0
    slices: int = 0

    def __call__(self, ldct: np.ndarray, kernel: str | None = None) -> np.ndarray:
        """``ldct`` denoised; ``kernel`` is the series' ConvolutionKernel (a model's keep-noise follows it)."""
        start = time.perf_counter()
        out = self._apply(ldct, kernel)
        self.seconds += time.perf_counter() - start
        self.slices += ldct.shape[0]
        return out

    def _apply(self, ldct: np.ndarray, kernel: str | None) -> np.ndarray:
        return ldct.copy()


@dataclass
class Gaussian(Method):
    sigma_px: float = 1.0

    def _apply(self, ldct: np.ndarray, kernel: str | None) -> np.ndarray:
        return gaussian_slices(ldct, self.sigma_px)


@dataclass
class BM3D(Method):
    """BM3D with the noise std estimated from each low-dose volume (recorded per volume)."""

    def _apply(self, ldct: np.ndarray, kernel: str | None) -> np.ndarray:
        sigma = estimate_noise_hu(ldct)
        self.parameters.setdefault("sigma_hu_per_volume", []).append(round(sigma, 2))
        return bm3d_slices(ldct, sigma)


@dataclass
class Model(Method):
    denoiser: VolumeDenoiser | None = None

    def _apply(self, ldct: np.ndarray, kernel: str | None) -> np.ndarray:
        return self.denoiser(ldct, header_kernel=kernel)


def build_methods(specs: tuple[MethodSpec, ...], gaussian_sigma_px: float, device: str) -> list[Method]:
    methods = []
    for spec in specs:
        if spec.kind == "input":
            methods.append(Method(spec.name, spec.kind, parameters={"what": "the simulated low-dose scan itself"}))
        elif spec.kind == "gaussian":
            methods.append(Gaussian(spec.name, spec.kind, sigma_px=gaussian_sigma_px,
                                    parameters={"sigma_px": gaussian_sigma_px,
                                                "tuned": "best soft-tissue PSNR on the tuning series"}))
        elif spec.kind == "bm3d":
            methods.append(BM3D(spec.name, spec.kind, available=bm3d_available(),
                                why="" if bm3d_available() else "the optional bm3d package is not installed",
                                parameters={"profile": "bm3d 'np' (both stages), white noise",
                                            "sigma": "25th percentile of the 7x7 local std in the body of each "
                                                     "low-dose volume, HU"}))
        elif spec.kind == "model":
            methods.append(_model(spec, device))
        else:
            raise ValueError(f"unknown method kind {spec.kind!r} for {spec.name}")
    return methods


def _model(spec: MethodSpec, device: str) -> Method:
    if spec.path is None or not is_exported_model(spec.path):
        return Model(spec.name, spec.kind, available=False, why=f"no exported model at {spec.path}")
    loaded = load_model(spec.path)
    provenance = loaded.manifest.get("provenance", {})
    denoiser = VolumeDenoiser(loaded, EngineOptions(device=device, precision="fp32"))  # the same figures on any machine
    return Model(spec.name, spec.kind, denoiser=denoiser, parameters={
        "path": str(spec.path), "sha256": loaded.manifest.get("sha256", ""), "stage": provenance.get("stage"),
        "steps": provenance.get("steps"), "training_seconds": provenance.get("training_seconds"),
        "initialised_from": [f"{i.get('run')} ({i.get('stage')}, {i.get('steps')} steps)"
                             for i in provenance.get("initialised_from", [])],
        "crop": provenance.get("config", {}).get("data", {}).get("crop"),
        "batch": provenance.get("config", {}).get("schedule", {}).get("batch"),
        "method": provenance.get("method_name", "hu2024"),
        "machine": _machine(provenance.get("machine", {}))})


def _machine(machine: dict) -> str:
    """'x86_64, 2 CPUs' or the GPU's name, from what the export recorded (older models: the processor only)."""
    if machine.get("gpu"):
        return str(machine["gpu"])
    cpus = f", {machine['cpus']} CPUs" if machine.get("cpus") else ""
    return f"{machine.get('processor', '')}{cpus}"
