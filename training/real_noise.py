"""Real-noise texture from the training series themselves, mixed into the simulator's noise.

A model that met one simulator's noise removes much less of another texture (Nelson et al., FDA,
2024, roughly doubled the noise a CNN removes on unseen textures by training on real noise).
Neighbouring slices that do not overlap image the same anatomy with independent noise, so where
the anatomy agrees their difference over sqrt(2) is the scanner's own noise: its kernel, pixel size
and dose. Not one 64-pixel patch of the training series is matched everywhere (anatomy changes
between slices), so the texture is kept as the noise's autocorrelation over the matched soft-tissue
pixels (the masked estimate: per lag, the sum over pairs of valid pixels over their count) up to
``MAX_LAG`` pixels, and training draws stationary Gaussian noise with that autocorrelation (the
power spectrum is the Fourier transform of the tapered autocorrelation) at any crop size, scaled
to follow the simulator's local noise level. On a phantom with known noise the (detrended)
difference gets the spectrum's shape within 5 %; the flat-region residual (a slice minus its
smoothed self), the other candidate, is off by 75 % (edges leak in, the noise's low frequencies go
out): ``python -m evaluation.noise_texture`` measures both and draws them beside the simulator's.

Only the volumes given are read: the trainer gives the training split, so a held-out subject's
noise never enters training. Estimation has no randomness; the noise drawn is a function of the
crop's random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from LDCTDenoiseLib.engine.neighbours import matched, neighbour_offset

MAX_LAG = 12  # pixels each way: the texture of CT kernels decays within a few pixels
LEVEL_SIGMA_PX = 6.0  # the simulator's local noise level: RMS over a Gaussian window this wide
SOFT_TISSUE_HU = (-150.0, 150.0)
FLAT_GRADIENT = 200.0  # Sobel magnitude of the 3-px smoothed slice (as the engine's noise correlation uses)
DETREND_SIGMA_PX = 8.0  # the smooth part of a difference removed: anatomy that changed between the slices


@dataclass(frozen=True)
class Texture:
    """One series' noise autocorrelation (unit variance at lag 0), ``(2 MAX_LAG + 1)`` square."""

    name: str
    autocorrelation: np.ndarray
    noise_hu: float  # the series' own noise, for the record
    pixels: int  # matched pixels it was estimated on

    def spectrum(self, size: int) -> np.ndarray:
        """Power spectrum on a ``size`` square grid (unit variance): the tapered autocorrelation's FFT."""
        lags = self.autocorrelation.shape[0] // 2
        taper = np.hanning(2 * lags + 3)[1:-1]
        kernel = np.zeros((size, size))
        tapered = self.autocorrelation * np.outer(taper, taper)
        index = np.arange(-lags, lags + 1) % size
        kernel[np.ix_(index, index)] = tapered
        power = np.clip(np.fft.fft2(kernel).real, 0, None)
        return power / power.mean()

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A ``size`` square of stationary unit-variance noise with this texture."""
        white = np.fft.fft2(rng.standard_normal((size, size)))
        return np.fft.ifft2(white * np.sqrt(self.spectrum(size))).real.astype(np.float32)


def difference_autocorrelation(hu: np.ndarray, offset: int, max_lag: int = MAX_LAG,
                               detrend_px: float = DETREND_SIGMA_PX) -> tuple[np.ndarray, int]:
    """(autocorrelation in HU^2, pixels) of the noise of slices ``offset`` apart where their anatomy agrees.

    The difference keeps what anatomy changes between the slices, mostly at low frequencies (on a
    phantom with known noise: 3x the true power at zero frequency); its smooth part (a masked
    Gaussian of ``detrend_px``) is removed, which brings the spectrum's shape error from 18 to 5 %
    there (``evaluation.noise_texture``).
    """
    flat = [flat_tissue(image) for image in hu]  # each slice's, once: it serves both of its pairs
    pairs = []
    for k in range(hu.shape[0] - offset):
        difference = (hu[k] - hu[k + offset]) / np.sqrt(2)
        mask = flat[k] & flat[k + offset] & matched(hu[k], hu[k + offset])
        if detrend_px:
            weight = ndimage.gaussian_filter(mask.astype(np.float64), detrend_px)
            difference = difference - ndimage.gaussian_filter(difference * mask, detrend_px) / np.maximum(weight, 1e-3)
        pairs.append((difference, mask))
    return masked_autocorrelation(pairs, max_lag)


def residual_autocorrelation(hu: np.ndarray, sigma_px: float = 2.0, max_lag: int = MAX_LAG) -> tuple[np.ndarray, int]:
    """The same from flat-region residuals (slice minus its Gaussian-smoothed self): the candidate rejected."""
    pairs = [(image - ndimage.gaussian_filter(image, sigma_px), soft_tissue(image)) for image in hu]
    return masked_autocorrelation(pairs, max_lag)


def masked_autocorrelation(images_and_masks: list[tuple[np.ndarray, np.ndarray]],
                           max_lag: int) -> tuple[np.ndarray, int]:
    """Autocorrelation over valid pixels only, each image's valid mean removed; lags up to ``max_lag``."""
    products = counts = 0.0
    pixels = 0
    for image, mask in images_and_masks:
        if mask.sum() < 100:
            continue
        valid = mask.astype(np.float64)
        centred = (image - image[mask].mean()) * valid
        shape = [n + max_lag for n in image.shape]
        products = products + _lags(np.fft.rfft2(centred, shape), shape, max_lag)
        counts = counts + _lags(np.fft.rfft2(valid, shape), shape, max_lag)
        pixels += int(mask.sum())
    if not pixels:
        return np.zeros((2 * max_lag + 1,) * 2), 0
    return products / np.maximum(counts, 1), pixels


def textures(volumes: list, notes: list[str], min_pixels: int = 20_000) -> list[Texture]:
    """The texture of every volume (``SlicePair``) with independent neighbours and enough matched tissue."""
    found = []
    for volume in volumes:
        hu = np.asarray(volume.ndct, dtype=np.float32)
        offset = neighbour_offset(hu, 1.0, None, [], skipped="") if hu.shape[0] > 2 else None  # measured, not read
        if offset is None:
            notes.append(f"real-noise texture: {volume.name} skipped (too few slices or correlated neighbours)")
            continue
        autocorrelation, pixels = difference_autocorrelation(hu, offset)
        if pixels < min_pixels or autocorrelation[MAX_LAG, MAX_LAG] <= 0:
            notes.append(f"real-noise texture: {volume.name} skipped ({pixels} matched soft-tissue pixels)")
            continue
        variance = autocorrelation[MAX_LAG, MAX_LAG]
        found.append(Texture(volume.name, autocorrelation / variance, float(np.sqrt(variance)), pixels))
    return found


class TextureMix:
    """Mixes real-noise texture into a crop's simulated noise with probability ``probability``.

    The share of variance the real texture takes is drawn in ``share``; it is scaled to the simulated
    noise's local level (RMS over a ``LEVEL_SIGMA_PX`` Gaussian), so the dose's spatial pattern stays.
    """

    def __init__(self, found: list[Texture], probability: float, share: tuple[float, float] = (0.5, 1.0)) -> None:
        if not 0 <= probability <= 1 or not 0 <= share[0] <= share[1] <= 1:
            raise ValueError(f"real-noise probability and share lie in [0, 1]; got {probability}, {list(share)}")
        if probability > 0 and not found:
            raise ValueError("no training series gave a real-noise texture; set noise.real_texture=0")
        self.found, self.probability, self.share = found, probability, share

    def __call__(self, rng: np.random.Generator, noise: np.ndarray) -> tuple[np.ndarray, float]:
        """(noise, share of real texture): the simulated noise mixed, or as it was."""
        if rng.random() >= self.probability:
            return noise, 0.0
        texture = self.found[int(rng.integers(len(self.found)))]
        share = float(rng.uniform(*self.share))
        real = texture.draw(rng, max(noise.shape))[: noise.shape[0], : noise.shape[1]]
        level = np.sqrt(ndimage.gaussian_filter(noise.astype(np.float64) ** 2, LEVEL_SIGMA_PX))
        mixed = np.sqrt(1 - share) * noise + np.sqrt(share) * level * real
        return mixed.astype(np.float32), share


def soft_tissue(image: np.ndarray) -> np.ndarray:
    return _soft(ndimage.gaussian_filter(image, 3))


def flat_tissue(image: np.ndarray) -> np.ndarray:
    """Soft tissue away from edges (the smoothed slice's gradient small), where differences are mostly noise."""
    smooth = ndimage.gaussian_filter(image, 3)
    return _soft(smooth) & (ndimage.generic_gradient_magnitude(smooth, ndimage.sobel) < FLAT_GRADIENT)


def _soft(smooth: np.ndarray) -> np.ndarray:
    return (smooth > SOFT_TISSUE_HU[0]) & (smooth < SOFT_TISSUE_HU[1])


def _lags(spectrum: np.ndarray, shape: list[int], max_lag: int) -> np.ndarray:
    """Central ``max_lag`` lags of the circular autocorrelation of a zero-padded image."""
    full = np.fft.irfft2(spectrum * np.conj(spectrum), shape)
    index = np.arange(-max_lag, max_lag + 1)
    return full[np.ix_(index, index)]
