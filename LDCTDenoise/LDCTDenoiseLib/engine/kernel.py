"""Which kind of reconstruction kernel made a series, and so how much noise its normal dose keeps.

A sharp kernel (lung, bone: GE LUNG/BONE, Siemens B50f-B70f, Philips D/L/Y*, Canon FC5x) has
several times the noise of a soft-tissue kernel at the same dose, and its users chose it for that
resolution. With one keep-noise for every kernel, the engine took a sharp-kernel series for a noisy
one and turned it into a smooth soft-tissue image: on the held-out Philips L slice (normal-dose flat
noise 74 HU) 19 dB soft-tissue PSNR below its own input with 10 HU added (docs/evaluation.md). The
keep-noise rule's ``keep`` is the noise the normal-dose scan has, so it follows the kernel: the
model's keep times ``KEEP_FACTOR`` of the kernel's kind. The factors come from slices the sweep does
not score (``evaluation/kernel_calibration.py``, docs/evaluation/kernel-calibration): on sharp
kernels (Philips L, GE LUNG; normal-dose flat noise 26-82 HU, highest at the shoulders) only 100 HU
kept (x5) left 99 of 100 cells not worse than the input, 80 HU 89; Philips L has 5.1x the flat noise
of Philips B on one acquisition (Lung_Dx-A0001, both kernels). On Siemens B10f (7 HU) 15 HU (x0.75)
was the best keep never worse. The standard kernel's 20 HU is the model's, chosen on validation data.

The kind comes from the header's ConvolutionKernel where its name is known (``kind_of_kernel_name``),
else from the noise's texture: a sharp kernel's noise barely correlates between neighbouring pixels
(lag-1 autocorrelation of the flat-tissue residual 0.07-0.09 on Philips L and GE LUNG, 0.17-0.49 on
20 standard-kernel series in ../shared/data). A smooth kernel does not show in that statistic
(Siemens B10f at 1.37 mm pixels: 0.29), so the noise only tells sharp from not sharp.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .noise_level import FLAT_WINDOW_PX, MIN_FLAT_PIXELS, flat_soft_tissue

KEEP_FACTOR = {"smooth": 0.75, "standard": 1.0, "sharp": 5.0}
SHARP_LAG1 = 0.13  # below this lag-1 autocorrelation the noise is a sharp kernel's
MEASURED_SLICES = 8  # slices spread over the series that the noise texture is measured on

_GE = {"SOFT": "smooth", "SMOOTH": "smooth", "STANDARD": "standard", "STND": "standard", "LUNG": "sharp",
       "BONE": "sharp", "BONEPLUS": "sharp", "EDGE": "sharp", "SHARP": "sharp"}
_PHILIPS = {"A": "smooth", "B": "standard", "C": "standard", "D": "sharp", "E": "sharp", "L": "sharp",
            "YB": "sharp", "YC": "sharp", "YD": "sharp", "YE": "sharp"}
_SIEMENS = re.compile(r"^[A-Z][a-z]?(\d{2})[a-z]?$")  # B30f, Br40d, I26f, Hr64h, Q30f
_CANON = re.compile(r"^FC(\d{2})$")  # FC13, FC17, FC52, FC86


class KernelKind(NamedTuple):
    """A series' kernel kind, where it came from, and what showed it (for the run's summary)."""

    kind: str
    source: str  # "option", "header" or "noise"
    detail: str

    def describe(self) -> str:
        return f"{self.kind} kernel ({self.source}: {self.detail})"


def kind_of_kernel_name(name: str | None) -> str | None:
    """'smooth', 'standard' or 'sharp' for a ConvolutionKernel name this module knows, else None."""
    if not name:
        return None
    name = str(name).strip()
    words = re.split(r"[\s_/]+", name.upper())
    for word in words:
        if word in _GE:
            return _GE[word]
    if name.upper() in _PHILIPS and (len(name) == 1 or name.isupper()):
        return _PHILIPS[name.upper()]
    siemens, canon = _SIEMENS.match(name), _CANON.match(name.upper())
    if siemens:
        number = int(siemens.group(1))
        return "smooth" if number <= 20 else "sharp" if number >= 50 else "standard"
    if canon:
        number = int(canon.group(1))
        return "sharp" if number >= 50 else "standard" if number < 30 else None
    return None


def noise_lag1(hu: np.ndarray) -> float | None:
    """Median over up to ``MEASURED_SLICES`` slices of the flat-tissue noise's lag-1 autocorrelation."""
    picks = np.unique(np.linspace(0, hu.shape[0] - 1, min(hu.shape[0], MEASURED_SLICES)).astype(int))
    values = [value for value in (_slice_lag1(np.asarray(hu[k], dtype=np.float64)) for k in picks)
              if value is not None]
    return float(np.median(values)) if values else None


def series_kernel(hu: np.ndarray, option: str = "auto", header_kernel: str | None = None) -> KernelKind:
    """The kind the engine uses: the option where it names one, else the header's name, else the noise."""
    if option != "auto":
        return KernelKind(option, "option", f"--kernel {option}")
    kind = kind_of_kernel_name(header_kernel)
    if kind is not None:
        return KernelKind(kind, "header", f"ConvolutionKernel {header_kernel}")
    lag1 = noise_lag1(hu)
    if lag1 is None:
        return KernelKind("standard", "noise", "too little flat soft tissue to measure; taken as standard")
    kind = "sharp" if lag1 < SHARP_LAG1 else "standard"
    return KernelKind(kind, "noise", f"neighbouring pixels' noise correlates {lag1:.2f}")


def _slice_lag1(image: np.ndarray) -> float | None:
    flat = flat_soft_tissue(image)
    if flat.sum() < MIN_FLAT_PIXELS:
        return None
    residual = image - ndimage.uniform_filter(image, FLAT_WINDOW_PX)
    variance = float(np.mean(residual[flat] ** 2))
    if variance == 0.0:
        return None
    products = []
    for axis in (0, 1):
        a = np.moveaxis(residual, axis, 0)
        m = np.moveaxis(flat, axis, 0)
        both = m[:-1] & m[1:]
        products.append(np.mean(a[:-1][both] * a[1:][both]))
    return float(np.mean(products)) / variance
