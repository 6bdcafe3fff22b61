"""Regions of interest as boolean masks on a volume's voxel grid.

Three ways to say where: a box in world coordinates (LPS as in DICOM/ITK, or RAS as in Slicer;
given by centre and size or by bounds), a labelmap or segment volume resampled onto the grid, or
a HU range inside the body. The box is axis-aligned in the world, so a volume whose direction
matrix is not the identity gets the voxels whose centres fall inside the world box, not an
index-space box. Empty regions, or regions outside the volume, are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.volume import Volume
from ..optional import optional_import
from .alignment import grid_image

sitk = optional_import("SimpleITK")

COORDINATES = ("LPS", "RAS")
BODY_HU = -500.0


@dataclass(frozen=True)
class Region:
    """A named mask on a volume grid, with a description that says how it was made."""

    name: str
    mask: np.ndarray
    description: str
    notes: tuple[str, ...] = ()  # what was done to the region as given (e.g. clipped to the volume)

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Box:
    """An axis-aligned world box in LPS millimetres (``low`` <= ``high`` per axis)."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    @classmethod
    def from_center_size(cls, center, size, coordinates: str = "LPS") -> Box:
        center, size = _three(center, "centre"), _three(size, "size")
        if np.any(size <= 0):
            raise InputError(f"a box needs a positive size on every axis; got {size.tolist()} mm")
        center = _to_lps(center, coordinates)
        return cls(tuple(center - size / 2), tuple(center + size / 2))

    @classmethod
    def from_bounds(cls, bounds, coordinates: str = "LPS") -> Box:
        """``bounds`` = (x_min, x_max, y_min, y_max, z_min, z_max) as Slicer's GetBounds gives them."""
        values = np.asarray(bounds, dtype=float)
        if values.shape != (6,) or np.any(values[1::2] < values[0::2]):
            raise InputError(f"bounds are (x_min, x_max, y_min, y_max, z_min, z_max) with min <= max; got {bounds}")
        corners = np.array([_to_lps(values[0::2], coordinates), _to_lps(values[1::2], coordinates)])
        return cls(tuple(corners.min(0)), tuple(corners.max(0)))

    def describe(self) -> str:
        low, high = np.round(self.low, 1).tolist(), np.round(self.high, 1).tolist()
        return f"world box LPS {low} .. {high} mm"

    def corners(self) -> np.ndarray:
        low, high = self.low, self.high
        return np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= np.asarray(self.low) - 1e-6) & (points <= np.asarray(self.high) + 1e-6), axis=1)


@dataclass(frozen=True)
class OrientedBox:
    """A box with its own axes (a rotated Slicer ROI): LPS centre, unit axes as columns, size in mm."""

    center: tuple[float, float, float]
    axes: np.ndarray
    size: tuple[float, float, float]

    @classmethod
    def from_ras(cls, center, axes, size) -> OrientedBox:
        """From Slicer's RAS centre and axis vectors (columns) and the size along each axis."""
        flip = np.diag([-1.0, -1.0, 1.0])
        center, size = flip @ _three(center, "centre"), _three(size, "size")
        return cls(tuple(center), flip @ np.asarray(axes, dtype=float), tuple(size))

    def describe(self) -> str:
        return f"oriented box LPS centre {np.round(self.center, 1).tolist()} size {np.round(self.size, 1).tolist()} mm"

    def corners(self) -> np.ndarray:
        half = np.asarray(self.size) / 2
        signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
        return np.asarray(self.center) + (signs * half) @ self.axes.T

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = (points - np.asarray(self.center)) @ self.axes  # coordinates along the box's own axes
        return np.all(np.abs(local) <= np.asarray(self.size) / 2 + 1e-6, axis=1)


def box_mask(volume: Volume, box: Box | OrientedBox) -> np.ndarray:
    """Voxels of ``volume`` whose centres lie inside the world box (any direction matrix)."""
    block = _index_block(volume, box.corners())
    if block is None:
        raise InputError(f"the {box.describe()} lies outside the volume ({_extent(volume)}); check the coordinates "
                         "(LPS as in DICOM, or RAS as in Slicer) and the units (mm)")
    k, j, i = np.meshgrid(*(np.arange(a, b) for a, b in block), indexing="ij")
    world = volume.index_to_world(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1))
    inside = box.contains(world).reshape(k.shape)
    mask = np.zeros(volume.array.shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in block)] = inside
    if not mask.any():
        raise InputError(f"the {box.describe()} contains no voxel centre of the volume; make it larger")
    return mask


def box_region(name: str, volume: Volume, box: Box | OrientedBox, description: str) -> Region:
    """The box's voxels as a region, with a note when part of the box lies outside the volume."""
    mask = box_mask(volume, box)
    outside = box_outside_fraction(volume, box)
    notes = (f"region {name}: {outside:.0%} of the box lies outside the volume ({_extent(volume)}); "
             "measured on the part inside",) if outside >= 0.01 else ()
    return Region(name, mask, description, notes)


def box_outside_fraction(volume: Volume, box: Box | OrientedBox, points_per_axis: int = 16) -> float:
    """The share of the box's volume outside the volume's voxels (sampled on a regular grid of points)."""
    u = (np.arange(points_per_axis) + 0.5) / points_per_axis
    unit = np.stack(np.meshgrid(u, u, u, indexing="ij"), axis=-1).reshape(-1, 3)
    corners = box.corners()  # index 4a + 2b + c is the corner (a, b, c) of the unit cube
    low, steps = corners[0], np.stack([corners[4] - corners[0], corners[2] - corners[0], corners[1] - corners[0]])
    ijk = _world_to_index(volume, low + unit @ steps)
    size = np.asarray(volume.array.shape[::-1])
    inside = np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=1)
    return float(1.0 - inside.mean())


def labelmap_mask(volume: Volume, labelmap: Volume, label: int | None = None) -> np.ndarray:
    """A labelmap (or segment) volume resampled onto ``volume``'s grid (nearest neighbour)."""
    labels = labelmap.to_sitk()
    resampled = sitk.GetArrayFromImage(sitk.Resample(labels, grid_image(volume), sitk.Transform(),
                                                     sitk.sitkNearestNeighbor, 0))
    mask = resampled != 0 if label is None else resampled == label
    if not mask.any():
        present = np.unique(labelmap.array)
        which = "any label" if label is None else f"label {label}"
        raise InputError(f"{which} of the labelmap covers no voxel of the volume (labels present: "
                         f"{present[present != 0].tolist()[:10]}); check the label and that both share a patient space")
    return mask


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient: the largest connected region above -500 HU, holes (lungs, bowel gas) filled per slice."""
    labels, count = ndimage.label(hu > BODY_HU)
    if count == 0:
        raise InputError("no voxel above -500 HU: the volume holds no body (is it in HU?)")
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    body = labels == largest
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def hu_range_mask(volume: Volume, low: float, high: float, inside_body: bool = True) -> np.ndarray:
    """Voxels with ``low`` <= HU <= ``high`` (inside the body by default)."""
    if high < low:
        raise InputError(f"a HU range needs low <= high; got {low} .. {high}")
    hu = volume.array
    mask = (hu >= low) & (hu <= high)
    if inside_body:
        mask &= body_mask(hu)
    if not mask.any():
        raise InputError(f"no voxel between {low:g} and {high:g} HU{' inside the body' if inside_body else ''}")
    return mask


def _index_block(volume: Volume, corners: np.ndarray) -> list[tuple[int, int]] | None:
    """The index ranges (k, j, i) that can hold voxel centres of the box, or None when none can."""
    ijk = _world_to_index(volume, corners)
    first, last = np.floor(ijk.min(0)).astype(int), np.ceil(ijk.max(0)).astype(int) + 1
    size = np.asarray(volume.array.shape[::-1])
    first, last = np.clip(first, 0, size), np.clip(last, 0, size)
    if np.any(last <= first):
        return None
    return [(int(first[a]), int(last[a])) for a in (2, 1, 0)]


def _world_to_index(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) of LPS points (rows): the inverse of ``Volume.index_to_world``."""
    matrix = volume.direction * np.asarray(volume.spacing)  # columns: world step of i, j, k
    return np.linalg.solve(matrix, (np.asarray(points) - np.asarray(volume.origin)).T).T


def _extent(volume: Volume) -> str:
    size = np.asarray(volume.array.shape[::-1]) - 1
    corners = volume.index_to_world([[a, b, c] for a in (0, size[0]) for b in (0, size[1]) for c in (0, size[2])])
    return f"LPS {np.round(corners.min(0), 1).tolist()} .. {np.round(corners.max(0), 1).tolist()} mm"


def _three(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != (3,) or not np.isfinite(array).all():
        raise InputError(f"a box {what} is three finite numbers (x, y, z in mm); got {values}")
    return array


def _to_lps(point: np.ndarray, coordinates: str) -> np.ndarray:
    if coordinates not in COORDINATES:
        raise InputError(f"coordinates must be LPS or RAS; got {coordinates!r}")
    point = np.asarray(point, dtype=float)
    return point * np.array([-1.0, -1.0, 1.0]) if coordinates == "RAS" else point
