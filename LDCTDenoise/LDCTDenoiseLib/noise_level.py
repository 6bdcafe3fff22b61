"""How much of the network's correction a slice gets, from the noise the correction removes.

A normal-dose scan keeps noise of its own (8-25 HU in flat soft tissue). A network trained to reach
the NDCT removes that too, and blurs thin bright structures (couch, cortical bone) a little, so on a
light-dose scan it scores below its input against any real normal-dose reference (issue 11's sweep:
-4 dB soft tissue at 10 HU added). The correction in flat soft tissue measures the noise the network
removes, ``sigma``; applying the fraction ``1 - keep^2 / sigma^2`` of it (a Wiener weight that treats
``keep`` HU as noise a normal-dose scan has anyway) leaves a normal-dose scan almost untouched and a
noisy one almost fully denoised. Where a slice has no flat soft tissue to measure, it gets the whole
correction.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .roi import body_mask

RULE_VERSION = 2  # raise when the weight's rule changes its output: caches of denoised images key on it
SOFT_HU = (-150.0, 150.0)  # flat soft tissue: the image smoothed lies in here ...
FLAT_GRADIENT_HU_PER_PX = 4.0  # ... and barely changes
FLAT_WINDOW_PX = 9  # flat pixels keep half this window away from any edge
MIN_FLAT_PIXELS = 100  # fewer than this and the slice's noise is not measured (a 10 x 10 patch)


def flat_soft_tissue(image: np.ndarray) -> np.ndarray:
    """Pixels of soft tissue inside the body whose smoothed image barely changes around them."""
    smooth = ndimage.gaussian_filter(image.astype(np.float64), 2.0)
    gradient = np.hypot(*np.gradient(smooth))
    flat = (smooth > SOFT_HU[0]) & (smooth < SOFT_HU[1]) & (gradient < FLAT_GRADIENT_HU_PER_PX)
    flat &= _body(image)
    return ndimage.binary_erosion(flat, iterations=FLAT_WINDOW_PX // 2)


def correction_weight(denoised: np.ndarray, correction: np.ndarray, keep_noise_hu: float) -> float:
    """The fraction (0 to 1) of one slice's ``correction`` to apply so that about ``keep_noise_hu`` stays.

    ``denoised`` is the input plus the whole correction: flat tissue is found on it, where the noise
    no longer hides the edges.
    """
    if keep_noise_hu <= 0:
        return 1.0
    flat = flat_soft_tissue(denoised)
    if flat.sum() < MIN_FLAT_PIXELS:
        return 1.0
    removed_variance = float(np.mean(np.square(correction[flat], dtype=np.float64)))
    if removed_variance <= keep_noise_hu**2:
        return 0.0
    return 1.0 - keep_noise_hu**2 / removed_variance


def applied_summary(run: dict) -> str:
    """', keep 11 HU: 40-97 % applied' for a run's record (``VolumeDenoiser.last_run``); '' without keep-noise."""
    if not run.get("keep_noise_hu") or not run.get("applied_percent"):
        return ""
    low, high = run["applied_percent"]
    return f", keep {run['keep_noise_hu']:g} HU: {low:g}-{high:g} % applied"


def _body(image: np.ndarray) -> np.ndarray:
    """The patient (roi.body_mask), or nothing on a slice of air."""
    try:
        return body_mask(image[None])[0]
    except InputError:
        return np.zeros(image.shape, dtype=bool)
