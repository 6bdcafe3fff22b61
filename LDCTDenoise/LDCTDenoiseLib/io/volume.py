"""A CT volume in HU with its geometry, and file formats SimpleITK reads and writes.

Geometry follows ITK/DICOM: LPS world coordinates in mm, ``spacing``/``origin`` in (x, y, z)
order, ``direction`` a 3x3 matrix whose columns are the i, j, k axes. ``array`` is (k, j, i),
i.e. (slices, rows, columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import InputError, OutputError
from ..optional import optional_import

sitk = optional_import("SimpleITK")

WRITE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")  # single-file formats: written atomically
READ_SUFFIXES = WRITE_SUFFIXES + (".nhdr", ".mhd")


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"a volume is 3-D (slices, rows, columns); got shape {self.array.shape}")
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry and metadata, other voxels (e.g. the denoised result)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return replace(self, array=array, metadata=dict(self.metadata))

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """LPS position (mm) of continuous index (i, j, k); rows of ``ijk`` are points."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, metadata: dict | None = None) -> Volume:
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.asarray(image.GetDirection()).reshape(3, 3),
            metadata=metadata or {},
        )


def is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(READ_SUFFIXES)


def read_volume_file(path: str | Path) -> Volume:
    """Read NRRD / NIfTI / MetaImage as HU (values are taken as stored: these formats carry HU)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read {path} as a volume: {_first_line(error)}") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; CT is scalar")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(f"{path} is {image.GetDimension()}-D; a 3-D CT volume is expected")
    header = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if key.startswith("LDCTDenoise")}
    return Volume.from_sitk(image, {"source": str(path), "source_format": "volume-file", "header": header})


def cast_voxels(array: np.ndarray, dtype) -> np.ndarray:
    """Voxels in another type: rounded and clipped to its range for integer types (int16 HU for CT)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return np.clip(np.rint(array), limits.min, limits.max).astype(dtype)
    return np.asarray(array, dtype=dtype)


def write_volume_file(volume: Volume, path: str | Path, dtype: type = np.float32) -> None:
    """Write by file extension, atomically (no partial file is ever left at ``path``)."""
    path = Path(path)
    if not path.name.lower().endswith(WRITE_SUFFIXES):
        raise OutputError(f"{path}: cannot write this format; use one of {', '.join(WRITE_SUFFIXES)}")
    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist")
    image = volume.with_array(volume.array.astype(dtype, copy=False)).to_sitk()
    for key, value in volume.metadata.get("header", {}).items():  # e.g. the model and strength that made it
        image.SetMetaData(key, str(value))
    with atomic_file(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as error:
            raise OutputError(f"cannot write {path}: {_first_line(error)}") from error
        _verify_written(tmp, image, path)


def _verify_written(tmp: Path, image: sitk.Image, path: Path) -> None:
    """Read the file back before it takes its name: ITK reports some short writes (a full disk, with
    .nii/.nii.gz) only on stderr and returns normally, leaving a truncated file."""
    try:
        back = sitk.ReadImage(str(tmp))
    except RuntimeError as error:
        raise OutputError(f"writing {path} failed (the file does not read back: {_first_line(error)}); "
                          "is the disk full? Nothing was written") from None
    if back.GetSize() != image.GetSize() or not np.array_equal(sitk.GetArrayViewFromImage(back),
                                                                sitk.GetArrayViewFromImage(image)):
        raise OutputError(f"writing {path} failed (the file reads back different voxels); is the disk full? "
                          "Nothing was written")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
