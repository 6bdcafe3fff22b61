"""Reading and writing CT volumes: DICOM series folders and single-file volume formats."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, OutputError
from .dicom_read import SeriesInfo, list_series, read_dicom_series
from .dicom_write import write_dicom_series
from .volume import (
    READ_SUFFIXES,
    WRITE_SUFFIXES,
    Volume,
    cast_voxels,
    is_volume_file,
    read_volume_file,
    write_volume_file,
)

__all__ = [
    "READ_SUFFIXES", "WRITE_SUFFIXES", "SeriesInfo", "Volume", "list_series", "read_volume",
    "write_volume", "read_dicom_series", "write_dicom_series", "read_volume_file", "write_volume_file", "cast_voxels",
    "check_output_format",
]


def read_volume(path: str | Path, series_uid: str | None = None, strict_geometry: bool = False) -> Volume:
    """A DICOM folder or a volume file, as HU with geometry (a tilted series resampled unless strict)."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid, strict_geometry)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if is_volume_file(path):
        return read_volume_file(path)
    raise InputError(
        f"{path}: give a DICOM series folder or a volume file ({', '.join(READ_SUFFIXES)}); "
        "for a single DICOM file, give its folder"
    )


def write_volume(volume: Volume, path: str | Path, description: str = "denoised (LDCTDenoise)") -> list[Path]:
    """Write a volume file by extension, or a derived DICOM series when ``path`` has none.

    ``description`` is appended to the source's SeriesDescription of a derived series.
    """
    path = Path(path)
    check_output_format(path)
    if path.name.lower().endswith(WRITE_SUFFIXES):
        write_volume_file(volume, path)
        return [path]
    return write_dicom_series(volume, path, description_suffix=description)


def check_output_format(path: Path) -> None:
    """A volume file extension, or a folder name (no extension) for a DICOM series; else an ``OutputError``."""
    if path.suffix and not path.name.lower().endswith(WRITE_SUFFIXES) and not path.is_dir():
        raise OutputError(
            f"{path}: unknown output format; use one of {', '.join(WRITE_SUFFIXES)} "
            "or a folder name (without extension) for a DICOM series"
        )
