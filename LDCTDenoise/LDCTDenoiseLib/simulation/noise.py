"""Low-dose CT from normal-dose CT: image-domain Gaussian noise and projection-domain noise.

Projection domain (as the AAPM/Mayo challenge made its quarter-dose data): the HU slice is
turned into attenuation, forward projected (parallel beam, scikit-image ``radon``), Poisson
photon noise plus Gaussian electronic noise is drawn on the counts, and the filtered
back-projection of the noise alone is added: ``LD = ND + FBP(noisy) - FBP(clean)``. Because
FBP is linear this equals ``ND + FBP(noisy - clean)``, one back-projection per slice.

The normal-dose scan already carries the noise of dose 1, so only the extra variance of dose
``a`` is inserted: photon counts are drawn at ``I0 * a / (1 - a)``, which makes the total
variance that of ``I0 * a`` (Yu et al., Med Phys 2012).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
from skimage.transform import iradon, radon

from ..errors import Cancelled, InputError
from ..io.volume import Volume
from .scanner import MU_WATER_PER_MM, ScannerNoise, scanner_noise_hu


@dataclass(frozen=True)
class ProjectionNoise:
    """Settings of projection-domain noise insertion; ``dose_fraction`` is LD dose / ND dose."""

    dose_fraction: float = 0.25
    photons_per_ray: float = 1.2e6  # I0 of the normal-dose scan per detector bin and view
    electronic_std: float = 10.0  # counts
    views: int = 360
    mu_water_per_mm: float = MU_WATER_PER_MM

    def __post_init__(self) -> None:
        if not 0.0 < self.dose_fraction < 1.0:
            raise InputError(f"dose fraction must lie in (0, 1); got {self.dose_fraction}")
        if self.photons_per_ray <= 0 or self.electronic_std < 0 or self.views < 8:
            raise InputError("photons per ray must be > 0, electronic noise >= 0 and views >= 8")

    def to_dict(self) -> dict:
        return asdict(self)


def add_gaussian_noise(hu: np.ndarray, sigma_hu: float, rng: np.random.Generator) -> np.ndarray:
    """The paper's stage-1 input: NDCT plus white Gaussian noise of ``sigma_hu`` HU (new array)."""
    if sigma_hu < 0:
        raise InputError(f"noise standard deviation must be >= 0 HU; got {sigma_hu}")
    noise = rng.normal(0.0, sigma_hu, size=hu.shape).astype(np.float32)
    return np.asarray(hu, dtype=np.float32) + noise


def projection_noise_hu(
    hu: np.ndarray, pixel_mm: float, settings: ProjectionNoise, rng: np.random.Generator
) -> np.ndarray:
    """The HU noise image that lowers one normal-dose slice to ``settings.dose_fraction``."""
    side = max(hu.shape)
    mu_pixel = np.zeros((side, side))
    top, left = (side - hu.shape[0]) // 2, (side - hu.shape[1]) // 2
    mu_pixel[top : top + hu.shape[0], left : left + hu.shape[1]] = (
        np.clip(settings.mu_water_per_mm * (1.0 + hu / 1000.0), 0.0, None) * pixel_mm
    )
    mu_pixel[~_inscribed_circle(side)] = 0.0  # the scan's field of view
    theta = np.linspace(0.0, 180.0, settings.views, endpoint=False)
    line_integrals = radon(mu_pixel, theta=theta, circle=True)
    a = settings.dose_fraction
    incident = settings.photons_per_ray * a / (1.0 - a)
    expected = incident * np.exp(-line_integrals)
    counts = rng.poisson(expected) + rng.normal(0.0, settings.electronic_std, size=expected.shape)
    noisy = np.log(incident / np.clip(counts, 1.0, None))
    delta_mu_pixel = iradon(noisy - line_integrals, theta=theta, circle=True, filter_name="ramp", output_size=side)
    delta_mu_pixel = delta_mu_pixel[top : top + hu.shape[0], left : left + hu.shape[1]]
    return (1000.0 * delta_mu_pixel / (settings.mu_water_per_mm * pixel_mm)).astype(np.float32)


def simulate_low_dose(
    volume: Volume,
    settings: ProjectionNoise | ScannerNoise | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int = 1,
) -> Volume:
    """A low-dose version of a normal-dose volume; reproducible for a given seed.

    ``settings`` is the fixed-recipe ``ProjectionNoise`` (a dose fraction) or a scanner-realistic
    ``ScannerNoise`` (noise at the body centre, filter, views, bowtie, modulation). Each slice has
    its own random stream spawned from ``seed``, so ``workers`` processes give the same result as one.
    """
    settings = settings or ProjectionNoise()
    column_mm, row_mm = volume.spacing[0], volume.spacing[1]
    if abs(column_mm - row_mm) > 1e-3 * column_mm:
        raise InputError(f"projection noise needs square pixels; got {column_mm} x {row_mm} mm")
    slices = volume.array.shape[0]
    generators = np.random.default_rng(seed).spawn(slices)
    jobs = ((volume.array[k].astype(np.float32), column_mm, settings, generators[k]) for k in range(slices))
    low_dose = np.empty(volume.array.shape, dtype=np.float32)
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        noise_images = pool.map(_noise_of, jobs) if pool is not None else map(_noise_of, jobs)
        for index, noise in enumerate(noise_images):
            if should_stop is not None and should_stop():
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                raise Cancelled("simulation cancelled; nothing was written")
            low_dose[index] = volume.array[index] + noise
            if progress is not None:
                progress(index + 1, slices)
    result = volume.with_array(low_dose)
    kind = "scanner" if isinstance(settings, ScannerNoise) else "projection-poisson"
    result.metadata["simulation"] = {"kind": kind, "seed": seed, **settings.to_dict()}
    return result


def _noise_of(job: tuple) -> np.ndarray:
    hu, pixel_mm, settings, rng = job
    if isinstance(settings, ScannerNoise):
        return scanner_noise_hu(hu, pixel_mm, settings, rng)
    return projection_noise_hu(hu, pixel_mm, settings, rng)


def _inscribed_circle(side: int) -> np.ndarray:
    """The disc scikit-image's radon(circle=True) reconstructs (same centre and radius)."""
    centre, radius = side // 2, side // 2
    y, x = np.ogrid[:side, :side]
    return (y - centre) ** 2 + (x - centre) ** 2 <= radius**2
