"""HU probability densities of a region: kernel density estimates on one grid with one bandwidth.

Curves of one plot share the HU grid and the kernel bandwidth (in HU), so their widths compare
the images, not the estimator. The bandwidth is Scott's rule on the reference (NDCT) sample unless
given. Large regions are sub-sampled with a fixed seed, so a curve is reproducible and fast. Each
curve gets its mean, std, mode, FWHM and its Jensen-Shannon divergence from the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import gaussian_kde

from ..errors import InputError

MAX_SAMPLES = 20_000
GRID_POINTS = 512


@dataclass
class DensityCurve:
    name: str
    hu: np.ndarray  # the shared grid
    density: np.ndarray  # per HU; integrates to ~1 over the grid
    mean: float
    std: float
    mode: float
    fwhm: float
    js_divergence: float | None  # from the reference, in bits (0 = same, 1 = disjoint)
    samples: int

    def summary(self) -> dict:
        return {"name": self.name, "mean_hu": self.mean, "std_hu": self.std, "mode_hu": self.mode,
                "fwhm_hu": self.fwhm, "js_divergence_bits": self.js_divergence, "samples": self.samples}


@dataclass
class Densities:
    curves: list[DensityCurve]
    bandwidth_hu: float
    reference: str | None


def hu_densities(values: dict[str, np.ndarray], reference: str | None = None, bandwidth_hu: float | None = None,
                 max_samples: int = MAX_SAMPLES, grid_points: int = GRID_POINTS, seed: int = 0) -> Densities:
    """One KDE per named HU sample (e.g. each volume's voxels in a region) on a common grid."""
    if not values:
        raise InputError("no volumes to estimate densities of")
    if reference is not None and reference not in values:
        raise InputError(f"the reference {reference!r} is not among {list(values)}")
    samples = {name: _subsample(np.asarray(v, dtype=np.float64).ravel(), max_samples, seed, name)
               for name, v in values.items()}
    basis = samples[reference] if reference is not None else np.concatenate(list(samples.values()))
    if bandwidth_hu is not None and not bandwidth_hu > 0:
        raise InputError(f"the kernel bandwidth must be > 0 HU; got {bandwidth_hu}")
    if bandwidth_hu is None and np.ptp(basis) == 0:
        which = f"{reference} is" if reference is not None else "all volumes are"
        raise InputError(f"{which} {basis[0]:g} HU at every voxel of the region, so it has no HU distribution to "
                         "compare with; draw the region inside the anatomy (a constant region is padding, air "
                         "outside the scan, or a blank image)")
    bandwidth = bandwidth_hu if bandwidth_hu is not None else _scott(basis)
    low = min(float(v.min()) for v in samples.values()) - 3 * bandwidth  # every curve's whole mass is on the grid
    high = max(float(v.max()) for v in samples.values()) + 3 * bandwidth
    grid = np.linspace(low, high, grid_points)
    densities = {name: _kde(sample, bandwidth, grid) for name, sample in samples.items()}
    curves = []
    for name, density in densities.items():
        divergence = None
        if reference is not None:
            divergence = float(jensenshannon(density, densities[reference], base=2) ** 2)
        curves.append(DensityCurve(
            name=name, hu=grid, density=density, mean=float(samples[name].mean()), std=float(samples[name].std()),
            mode=float(grid[np.argmax(density)]), fwhm=full_width_half_maximum(grid, density),
            js_divergence=divergence, samples=samples[name].size,
        ))
    return Densities(curves, float(bandwidth), reference)


def full_width_half_maximum(grid: np.ndarray, density: np.ndarray) -> float:
    """Width of the peak that holds the mode, at half its height (linear interpolation)."""
    peak = int(np.argmax(density))
    half = density[peak] / 2
    left = peak
    while left > 0 and density[left - 1] > half:
        left -= 1
    right = peak
    while right < density.size - 1 and density[right + 1] > half:
        right += 1
    return float(_crossing(grid, density, right, right + 1, half) - _crossing(grid, density, left, left - 1, half))


def _crossing(grid: np.ndarray, density: np.ndarray, inside: int, outside: int, half: float) -> float:
    if outside < 0 or outside >= density.size:
        return float(grid[inside])
    fraction = (density[inside] - half) / (density[inside] - density[outside])
    return float(grid[inside] + fraction * (grid[outside] - grid[inside]))


def _kde(sample: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    std = sample.std(ddof=1)
    if std == 0:
        raise InputError("a region's HU are all equal; a density needs some spread")
    return gaussian_kde(sample, bw_method=bandwidth / std)(grid)  # kernel std = factor * sample std


def _scott(sample: np.ndarray) -> float:
    return float(sample.std(ddof=1) * sample.size ** (-1 / 5))


def _subsample(values: np.ndarray, max_samples: int, seed: int, name: str) -> np.ndarray:
    if values.size < 2:
        raise InputError(f"{name}: a density needs at least 2 voxels; the region holds {values.size}")
    if not np.isfinite(values).all():
        raise InputError(f"{name}: the region holds NaN or infinite values")
    if values.size <= max_samples:
        return values
    return np.random.default_rng(seed).choice(values, size=max_samples, replace=False)
