"""Image quality against a reference: PSNR, SSIM (Wang et al.) and RMSE, each in a stated HU window.

A PSNR or SSIM means nothing without its data range, so every figure here is computed in a
``Window``: both images are clipped to the window and its width is the data range. SSIM is
Wang et al.'s: Gaussian window 11 (sigma 1.5), K1 0.01, K2 0.03, population covariances, mean
over the pixels whose window lies inside the image -- scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which
the tests use as the oracle. NumPy and SciPy only: Compare runs in Slicer's own process, which
need not load torch (the training loss has a differentiable twin in ``training.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

from ..errors import InputError

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): scikit-image's truncation, an 11-pixel window
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class Window:
    """A HU interval; metrics clip both images to it and use its width as the data range."""

    name: str
    low: float
    high: float

    @property
    def data_range(self) -> float:
        return self.high - self.low

    @property
    def label(self) -> str:
        return f"{self.name} [{self.low:g}, {self.high:g}] HU"

    def clip(self, hu: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(hu, dtype=np.float64), self.low, self.high)


SOFT_TISSUE = Window("soft tissue W400/L40", -160.0, 240.0)
FULL_RANGE = Window("full range", -1024.0, 3072.0)
DEFAULT_WINDOWS = (SOFT_TISSUE, FULL_RANGE)


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Local SSIM of two 2-D images, valid part only (H-10, W-10)."""
    if x.shape != y.shape or x.ndim != 2:
        raise InputError(f"SSIM needs two 2-D images of one shape; got {x.shape}, {y.shape}")
    if min(x.shape) < 2 * SSIM_RADIUS + 1:
        raise InputError(f"SSIM needs images of at least 11 x 11 pixels; got {x.shape}")
    g = gaussian_window()
    inside = (slice(SSIM_RADIUS, -SSIM_RADIUS),) * 2

    def blur(image: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(image, g, axis=0), g, axis=1)[inside]

    return ssim_from_blur(blur, x, y, data_range)


def ssim_from_blur(blur, x, y, data_range: float):
    """Wang et al.'s SSIM map from a local-mean filter; arrays or tensors alike (the training loss's twin)."""
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(image: np.ndarray, reference: np.ndarray, window: Window) -> float:
    """Mean SSIM of one 2-D slice against the reference, both clipped to ``window``."""
    x, y = _pair(image, reference, window)
    return float(ssim_map(x, y, window.data_range).mean())


def psnr(image: np.ndarray, reference: np.ndarray, window: Window) -> float:
    """PSNR in dB with the window's width as the peak; inf for identical images."""
    x, y = _pair(image, reference, window)
    return _psnr(float(np.mean((x - y) ** 2)), window.data_range)


def slice_metrics(image: np.ndarray, reference: np.ndarray, window: Window,
                  mask: np.ndarray | None = None) -> dict[str, float]:
    """PSNR, SSIM, RMSE (HU) and normalised RMSE (RMSE / data range) of one slice, or of its ``mask``.

    Inside a mask, SSIM is the mean of the SSIM map over the mask's pixels: the map is computed on
    the slice, so each window sees the region's surroundings, and pixels within 5 pixels of the
    slice border are left out, as scikit-image leaves them out of its mean.
    """
    x, y = _pair(image, reference, window)
    mask = np.ones(x.shape, dtype=bool) if mask is None else mask
    mse = float(np.mean((x[mask] - y[mask]) ** 2))
    error = float(np.sqrt(mse))
    return {
        "psnr": _psnr(mse, window.data_range),
        "ssim": _masked_ssim(x, y, mask, window.data_range),
        "rmse_hu": error,
        "nrmse": error / window.data_range,
    }


def _psnr(mse: float, data_range: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _masked_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """Mean SSIM map over ``mask``, computed on the mask's bounding box plus the window's reach."""
    rows, columns = np.nonzero(mask)
    r = SSIM_RADIUS
    top, bottom = max(rows.min() - r, 0), min(rows.max() + r + 1, x.shape[0])
    left, right = max(columns.min() - r, 0), min(columns.max() + r + 1, x.shape[1])
    box = (slice(top, bottom), slice(left, right))
    local = ssim_map(x[box], y[box], data_range)
    return float(local[mask[top + r : bottom - r, left + r : right - r]].mean())


def _pair(image: np.ndarray, reference: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    image, reference = np.asarray(image), np.asarray(reference)
    if image.shape != reference.shape or image.ndim != 2:
        raise InputError(f"metrics compare two 2-D slices of one shape; got {image.shape} and {reference.shape}")
    if not (np.isfinite(image).all() and np.isfinite(reference).all()):
        raise InputError("an image holds NaN or infinite values; metrics need finite HU")
    return window.clip(image), window.clip(reference)
