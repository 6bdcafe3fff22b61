"""How much of the network's correction a slice gets, from the noise in it and the noise the network removes.

A normal-dose scan keeps noise of its own (8-25 HU in flat soft tissue). A network trained to reach
the NDCT removes that too, and blurs thin bright structures (couch, cortical bone) a little, so on a
light-dose scan it scores below its input against any real normal-dose reference (issue 11's sweep:
-4 dB soft tissue at 10 HU added). In flat soft tissue, ``sigma_in`` is the input's local noise
(9 x 9 windows) and ``sigma_removed`` what the correction takes away. If ``keep`` HU of the input's
noise belong to a normal-dose scan and the network removes the same share of all of the noise,
the weight that minimises the error against that scan is
``(1 - keep^2 / sigma_in^2) * sigma_in / sigma_removed``: the Wiener share of the added noise,
divided by the fraction of the noise the network removes (on noise unlike its training data a
network removes only part of it, and its correction then needs all the weight it can get). A
normal-dose slice is left almost untouched, a noisy one gets the whole correction. A slice with no
flat soft tissue to measure gets the whole correction.

Outside the patient there is air and the couch, headrest or blankets, and no anatomy to restore: a
correction there beyond twice the input's noise is not noise taken away but structure changed (the
couch's 1-2 pixel gap filled in, +170 HU), so it is cut to that bound. The patient is
``roi.body_mask``'s largest region, so an arm or leg apart from the torso counts as outside too;
taking every region with thick soft tissue instead took a validation slice's thick couch pad for
the patient and lost 0.04 dB.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..compare.roi import body_mask
from ..errors import InputError

RULE_VERSION = 5  # raise when the weight's rule changes its output: caches of denoised images key on it
SOFT_HU = (-150.0, 150.0)  # flat soft tissue: the image smoothed lies in here ...
FLAT_GRADIENT_HU_PER_PX = 4.0  # ... and barely changes
FLAT_WINDOW_PX = 9  # flat pixels keep half this window away from any edge
MIN_FLAT_PIXELS = 100  # fewer than this and the slice's noise is not measured (a 10 x 10 patch)
TISSUE_HU = (-300.0, 300.0)  # soft tissue, fat and enhanced organs, whose local mean the correction keeps
TISSUE_MEAN_SIGMA_PX = 8.0  # validation cells: 4, 8 and 16 px fix the bias alike; 8 px gains the most PSNR
LITTLE_APPLIED_PERCENT = 20.0  # at most this share on most slices (the median): the run says it changed little
OUTSIDE_BOUND = 2.0  # x the input's noise; validation cells: 1.5 and 2 alike, 2 keeps the most full range


class SliceRule(NamedTuple):
    """One slice under the rule: its correction, the weight (0 to 1) it gets, and the input's measured noise."""

    correction: np.ndarray
    weight: float
    input_noise_hu: float | None  # flat soft tissue's noise; None where not measured (rule off, too little tissue)


def adapted_correction(hu: np.ndarray, correction: np.ndarray, keep_noise_hu: float) -> SliceRule:
    """One slice's correction under the rule (module docstring), and the weight (0 to 1) it gets.

    ``keep_noise_hu`` 0 asks for the network's whole correction: it comes back unchanged, weight 1.
    """
    if keep_noise_hu <= 0:
        return SliceRule(correction, 1.0, None)
    correction = without_tissue_mean(hu, correction)
    denoised = hu + correction
    patient = _body(denoised)
    flat = flat_soft_tissue(denoised, patient)
    if flat.sum() < MIN_FLAT_PIXELS:
        return SliceRule(correction, 1.0, None)
    input_noise = local_noise_hu(hu, flat)
    correction = bounded_outside_patient(correction, patient, OUTSIDE_BOUND * input_noise)
    return SliceRule(correction, wiener_weight(correction[flat], input_noise, keep_noise_hu), input_noise)


def without_tissue_mean(hu: np.ndarray, correction: np.ndarray) -> np.ndarray:
    """``correction`` less its local mean over soft tissue (of the denoised slice), in soft tissue only."""
    denoised = ndimage.gaussian_filter(hu + correction, 1.0)
    tissue = (denoised > TISSUE_HU[0]) & (denoised < TISSUE_HU[1])
    share = ndimage.gaussian_filter(tissue.astype(np.float32), TISSUE_MEAN_SIGMA_PX)
    summed = ndimage.gaussian_filter(np.where(tissue, correction, 0).astype(np.float32), TISSUE_MEAN_SIGMA_PX)
    mean = summed / np.maximum(share, np.float32(1e-6))  # a tissue pixel's own share is >= 1 / (2 pi sigma^2)
    return np.where(tissue, correction - mean, correction).astype(correction.dtype)


def flat_soft_tissue(image: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """Pixels of soft tissue inside the body whose smoothed image barely changes around them.

    ``body`` is the image's patient mask where the caller has it already (else it is found here).
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float64), 2.0)
    gradient = np.hypot(*np.gradient(smooth))
    flat = (smooth > SOFT_HU[0]) & (smooth < SOFT_HU[1]) & (gradient < FLAT_GRADIENT_HU_PER_PX)
    flat &= _body(image) if body is None else body
    return ndimage.binary_erosion(flat, iterations=FLAT_WINDOW_PX // 2)


def bounded_outside_patient(correction: np.ndarray, patient: np.ndarray, bound_hu: float) -> np.ndarray:
    """``correction`` cut to +-``bound_hu`` outside ``patient`` (``roi.body_mask`` of the denoised slice)."""
    return np.where(patient, correction, np.clip(correction, -bound_hu, bound_hu)).astype(correction.dtype)


def wiener_weight(removed_hu: np.ndarray, input_noise_hu: float, keep_noise_hu: float) -> float:
    """The share (0 to 1) of a correction that leaves about ``keep_noise_hu`` of noise.

    ``removed_hu`` is the correction over flat soft tissue, ``input_noise_hu`` the input's noise there.
    """
    removed_variance = float(np.mean(np.square(removed_hu, dtype=np.float64)))
    input_variance = input_noise_hu**2
    if removed_variance == 0.0:
        return 1.0
    if input_variance <= keep_noise_hu**2:
        return 0.0
    wiener = 1.0 - keep_noise_hu**2 / input_variance
    return float(min(1.0, wiener * np.sqrt(input_variance / removed_variance)))


def local_noise_hu(image: np.ndarray, flat: np.ndarray) -> float:
    """Noise std in flat soft tissue: the root mean local variance (9 x 9) over the flat pixels."""
    if not flat.any():
        return float("nan")
    rows, columns = np.nonzero(flat)
    margin = FLAT_WINDOW_PX // 2  # only the flat pixels' windows are needed: filter their bounding box
    box = (slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
           slice(max(columns.min() - margin, 0), columns.max() + margin + 1))
    image, flat = image[box], flat[box]
    hu = image.astype(np.float64)
    mean = ndimage.uniform_filter(hu, FLAT_WINDOW_PX)
    variance = np.maximum(ndimage.uniform_filter(hu * hu, FLAT_WINDOW_PX) - mean * mean, 0.0)
    return float(np.sqrt(variance[flat].mean()))


def applied_summary(run: dict) -> str:
    """', keep 20 HU for a ... kernel (...): 40-100 % applied' for a run's record; '' without keep-noise.

    ``run`` is ``VolumeDenoiser.last_run``. When the rule left (most of) the series untouched, it says so
    and how to denoise further: a user who sees no change otherwise has no hint that the series' noise was
    already near the target.
    """
    if not run.get("keep_noise_hu") or not run.get("applied_percent"):
        return ""
    low, high = run["applied_percent"]
    kernel = f" for a {run['kernel']}" if run.get("kernel") else ""
    text = f", keep {run['keep_noise_hu']:g} HU{kernel}: {low:g}-{high:g} % applied"
    typical = run.get("applied_median_percent")
    if (high if typical is None else typical) <= LITTLE_APPLIED_PERCENT:
        noise = run.get("input_noise_hu")
        measured = f"its noise measures {noise:.0f} HU in flat soft tissue, " if noise is not None else ""
        text += (f". Little was changed: {measured}near the {run['keep_noise_hu']:g} HU kept; to denoise further set "
                 "keep noise lower (--keep-noise 0 takes the network's whole correction)")
        if str(run.get("kernel", "")).startswith("sharp"):
            text += ", or the kernel to standard (--kernel standard) if the series is not a sharp-kernel one"
    return text


def _body(image: np.ndarray) -> np.ndarray:
    """The patient (roi.body_mask), or nothing on a slice of air."""
    try:
        return body_mask(image[None])[0]
    except InputError:
        return np.zeros(image.shape, dtype=bool)
