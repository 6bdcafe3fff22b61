"""Validation during training: PSNR/SSIM of the generator on held-out patients' simulated LDCT.

The validation input is the projection-domain low-dose simulation of each validation patient's
NDCT (aligned, so the comparison is fair), on evenly spaced slices and a central crop; with scanner
noise, one fixed ``ScannerNoise`` (``validation.scanner``) seeded per slice. Figures use
the project's metrics in the soft-tissue window and the full range; the input's own figures are
logged beside them, so progress reads as a gain over doing nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from LDCTDenoiseLib.compare.metrics import DEFAULT_WINDOWS, slice_metrics
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.networks.hu2024 import Generator
from LDCTDenoiseLib.simulation.scanner import ScannerNoise, scanner_noise_hu

from .config import TrainConfig
from .data import Patient
from .volumes import SeriesCache, evenly_spaced, projection_settings

WINDOW_KEYS = ("soft", "full")  # column suffixes for DEFAULT_WINDOWS, in order


class Validator:
    def __init__(
        self, config: TrainConfig, patients: list[Patient], cache: SeriesCache, normalization: Normalization
    ) -> None:
        self.normalization = normalization
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for number, patient in enumerate(patients):
            series = cache.ndct(patient)
            ndct = series.hu
            if config.noise.kind == "scanner":
                ldct = None
                settings = ScannerNoise(**config.validation.scanner)
            else:
                ldct = cache.simulated_ldct(
                    patient, projection_settings(config.noise, config.validation.dose_fraction), config.validation.seed
                ).hu
            for k in evenly_spaced(ndct.shape[0], config.validation.max_slices):
                window = (k, *_central(ndct.shape[1:], config.validation.crop))
                clean = np.asarray(ndct[window], np.float32)
                if ldct is None:
                    rows, columns = window[1:]
                    region = (rows.start or 0, columns.start or 0, *clean.shape)
                    rng = np.random.default_rng([config.validation.seed, number, int(k)])
                    noisy = clean + scanner_noise_hu(ndct[k], series.spacing[0], settings, rng, region)
                else:
                    noisy = np.asarray(ldct[window], np.float32)
                self.pairs.append((noisy, clean))
        self.baseline = self._scores([noisy for noisy, _ in self.pairs], "input")

    def __call__(self, generator: Generator) -> dict[str, float]:
        """Mean figures of the generator's outputs (and of the input, for reference)."""
        device = next(generator.parameters()).device
        was_training = generator.training
        generator.eval()
        outputs = []
        with torch.no_grad():
            for noisy, _ in self.pairs:
                x = torch.from_numpy(self.normalization.to_network(noisy))[None, None].to(device)
                correction = generator.residual(x).float().cpu().numpy()[0, 0]
                outputs.append(noisy + correction * self.normalization.scale)
        generator.train(was_training)
        return {**self._scores(outputs, "output"), **self.baseline}

    def _scores(self, images: list[np.ndarray], prefix: str) -> dict[str, float]:
        scores: dict[str, float] = {}
        for window, key in zip(DEFAULT_WINDOWS, WINDOW_KEYS, strict=True):
            rows = [slice_metrics(image, clean, window) for image, (_, clean) in zip(images, self.pairs, strict=True)]
            for name in ("psnr", "ssim", "rmse_hu"):
                scores[f"{prefix}_{name}_{key}"] = float(np.mean([r[name] for r in rows]))
        return scores


def _central(shape: tuple[int, int], crop: int) -> tuple[slice, slice]:
    if crop <= 0 or crop >= min(shape):
        return slice(None), slice(None)
    top, left = (shape[0] - crop) // 2, (shape[1] - crop) // 2
    return slice(top, top + crop), slice(left, left + crop)
