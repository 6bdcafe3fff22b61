"""Classical baselines the model is compared with: a Gaussian filter (sigma tuned on validation
data) and BM3D (the optional ``bm3d`` package, non-commercial licence: never vendored).

Both work slice by slice in HU, as the network does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE, psnr
from LDCTDenoiseLib.compare.roi import BODY_HU
from LDCTDenoiseLib.errors import InputError

SIGMAS_PX = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
BM3D_SCALE_HU = 4096.0  # BM3D runs on HU / 4096 (the model's normalised range); sigma is scaled alike


def gaussian_slices(volume: np.ndarray, sigma_px: float) -> np.ndarray:
    """In-plane Gaussian filter, slice by slice."""
    return ndimage.gaussian_filter(volume, sigma=(0, sigma_px, sigma_px)).astype(np.float32)


def best_gaussian_sigma(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The sigma (pixels) of SIGMAS_PX with the best mean soft-tissue PSNR over (noisy, clean) pairs."""

    def mean_psnr(sigma: float) -> float:
        return float(np.mean([psnr(filtered[k], clean[k], SOFT_TISSUE)
                              for noisy, clean in pairs for filtered in [gaussian_slices(noisy, sigma)]
                              for k in range(clean.shape[0])]))

    return max(SIGMAS_PX, key=mean_psnr)


def estimate_noise_hu(volume: np.ndarray, window_px: int = 7, percentile: float = 25.0) -> float:
    """Noise std in HU from the noisy volume alone: a low percentile of the local std (7 x 7 pixels)
    inside the body, i.e. the std of its flattest patches. Unlike wavelet (finest-band) estimates it
    sees the whole of FBP's spatially correlated noise, which those underestimate by half."""
    hu = np.asarray(volume, dtype=np.float64)
    size = (1, window_px, window_px)
    mean, mean_square = ndimage.uniform_filter(hu, size), ndimage.uniform_filter(hu * hu, size)
    samples = window_px * window_px
    local_std = np.sqrt(np.maximum(mean_square - mean * mean, 0.0) * samples / (samples - 1))
    inside = ndimage.binary_erosion(hu > BODY_HU, structure=np.ones((1, 3, 3)), iterations=window_px)
    if not inside.any():
        raise InputError("no body (HU > -500) wide enough to estimate the noise from")
    return float(np.percentile(local_std[inside], percentile))


def bm3d_available() -> bool:
    from importlib.util import find_spec

    return find_spec("bm3d") is not None


def bm3d_slices(volume: np.ndarray, sigma_hu: float) -> np.ndarray:
    """BM3D (both stages, white-noise profile) slice by slice with the given noise std in HU."""
    if not bm3d_available():
        raise InputError("BM3D needs the optional 'bm3d' package (non-commercial licence): "
                         "pip install 'ldctdenoise[bm3d]'")
    import bm3d

    out = np.empty(volume.shape, dtype=np.float32)
    for k, hu in enumerate(volume):
        scaled = (np.asarray(hu, dtype=np.float64) + 1024.0) / BM3D_SCALE_HU
        out[k] = bm3d.bm3d(scaled, sigma_psd=sigma_hu / BM3D_SCALE_HU) * BM3D_SCALE_HU - 1024.0
    return out
