"""A procedural chest-to-upper-abdomen phantom in HU, for tests and the demo without real data.

Axial slices run from the lungs and heart (top) to the liver (bottom), with fat, muscle,
spine, ribs, aorta, lung vessels and spherical nodules. Everything is defined in mm, so the
anatomy keeps its size whatever the grid; a fixed seed gives the same phantom every time.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..io.volume import Volume

AIR, FAT, MUSCLE, SOFT, LIVER, BLOOD, LUNG = -1000.0, -100.0, 50.0, 35.0, 60.0, 170.0, -850.0
CANCELLOUS, CORTICAL, NODULE, LUNG_VESSEL = 250.0, 900.0, 25.0, 40.0


def make_phantom(
    shape: tuple[int, int, int] = (16, 256, 256),
    pixel_mm: float | None = None,
    slice_mm: float = 2.5,
    seed: int = 0,
    texture_hu: float = 6.0,
) -> Volume:
    """A (slices, rows, columns) phantom covering a 360 mm field of view unless ``pixel_mm`` is set."""
    slices, rows, columns = shape
    pixel_mm = pixel_mm or 360.0 / max(rows, columns)
    rng = np.random.default_rng(seed)
    y = (np.arange(rows) - (rows - 1) / 2.0) * pixel_mm
    x = (np.arange(columns) - (columns - 1) / 2.0) * pixel_mm
    yy, xx = np.meshgrid(y, x, indexing="ij")
    z_extent = max(slices - 1, 1) * slice_mm
    nodules = _nodules(rng, z_extent)
    vessels = rng.uniform(-1, 1, size=(40, 2))
    hu = np.empty(shape, dtype=np.float32)
    for k in range(slices):
        t = k / max(slices - 1, 1)  # 0 at the lung apex side, 1 in the upper abdomen
        hu[k] = _slice(xx, yy, t, k * slice_mm, nodules, vessels)
    hu = gaussian_filter(hu, sigma=(0, 0.6, 0.6))  # partial-volume edges
    hu += rng.normal(0.0, texture_hu, size=shape).astype(np.float32) * (hu > -900)
    origin = (float(x[0]), float(y[0]), 0.0)
    return Volume(hu, spacing=(pixel_mm, pixel_mm, slice_mm), origin=origin,
                  metadata={"source": "phantom", "source_format": "phantom", "seed": seed})


def _slice(xx, yy, t, z_mm, nodules, vessels) -> np.ndarray:
    image = np.full(xx.shape, AIR, dtype=np.float32)
    image[_ellipse(xx, yy, 0, 0, 165, 120)] = FAT
    image[_ellipse(xx, yy, 0, 0, 155, 110)] = MUSCLE
    image[_ellipse(xx, yy, 0, 0, 140, 96)] = SOFT
    lung_scale = np.clip(1.2 - t, 0.0, 1.0)
    for side in (-1, 1):
        if lung_scale > 0.05:
            lung = _ellipse(xx, yy, side * 62, -8, 48 * lung_scale + 5, 70 * lung_scale + 5)
            image[lung] = LUNG
            for vx, vy in vessels:
                centre = (side * 62 + vx * 40 * lung_scale, -8 + vy * 60 * lung_scale)
                image[lung & _ellipse(xx, yy, *centre, 2.5, 2.5)] = LUNG_VESSEL
            for nx, ny, nz, radius in nodules:
                r2 = radius**2 - (z_mm - nz) ** 2
                if r2 > 0:
                    centre = (side * 62 + nx * 30 * lung_scale, ny * 50 * lung_scale)
                    image[lung & _ellipse(xx, yy, *centre, np.sqrt(r2), np.sqrt(r2))] = NODULE
    if 0.15 < t < 0.75:
        image[_ellipse(xx, yy, 18, 10, 48, 40)] = SOFT + 10  # myocardium
        image[_ellipse(xx, yy, 22, 12, 30, 24)] = BLOOD - 20  # ventricles
    if t > 0.5:
        scale = (t - 0.5) / 0.5
        image[_ellipse(xx, yy, -45, 5, 70 * scale + 20, 55 * scale + 15)] = LIVER
    image[_ellipse(xx, yy, 12, 55, 12, 12)] = BLOOD  # aorta
    image[_ellipse(xx, yy, 0, 80, 20, 17)] = CORTICAL  # vertebral body
    image[_ellipse(xx, yy, 0, 80, 16, 13)] = CANCELLOUS
    image[_ellipse(xx, yy, 0, 101, 6, 5)] = SOFT  # spinal canal
    for angle in np.linspace(0.35, np.pi - 0.35, 8):
        for side in (-1, 1):
            cx, cy = side * 148 * np.cos(angle), -104 * np.sin(angle) + 8
            image[_ellipse(xx, yy, cx, cy, 6, 4)] = CORTICAL
    return image


def _nodules(rng: np.random.Generator, z_extent: float) -> list[tuple[float, float, float, float]]:
    count = 4
    return [
        (rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), rng.uniform(0, 0.6) * z_extent, rng.uniform(3, 8))
        for _ in range(count)
    ]


def _ellipse(xx, yy, cx, cy, ax, ay) -> np.ndarray:
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
