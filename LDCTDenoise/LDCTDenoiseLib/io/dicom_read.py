"""Read one CT series from a DICOM folder into HU with its geometry, refusing what would mislead.

Slices are ordered by their position along the slice normal (not by file name or
InstanceNumber). HU = stored value * RescaleSlope + RescaleIntercept, per slice, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from .volume import Volume

POSITION_TOLERANCE_MM = 0.01
TILT_TOLERANCE_DEG = 0.1

# What to install for each family of compressed transfer syntaxes that pydicom hands to plugins.
DECODERS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}


@dataclass
class SeriesInfo:
    """One series found in a folder: its UID, a description for listings, and its files."""

    uid: str
    description: str
    modality: str
    headers: list[pydicom.Dataset] = field(repr=False)
    files: list[Path] = field(repr=False)

    def __str__(self) -> str:
        return f"{self.uid} ({self.modality}, {len(self.files)} files, '{self.description}')"


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every image series under ``folder`` (searched recursively), read from headers only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    found: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is None:
            continue
        uid = str(header.SeriesInstanceUID)
        if uid not in found:
            description = str(header.get("SeriesDescription", ""))
            found[uid] = SeriesInfo(uid, description, str(header.get("Modality", "?")), [], [])
        found[uid].headers.append(header)
        found[uid].files.append(path)
    return list(found.values())


def choose_series(folder: str | Path, series_uid: str | None = None) -> SeriesInfo:
    series = list_series(folder)
    if not series:
        raise InputError(f"no DICOM image files found in {folder}")
    listing = "; ".join(str(s) for s in series)
    if series_uid is not None:
        for candidate in series:
            if candidate.uid == series_uid:
                return candidate
        raise InputError(f"series {series_uid} is not in {folder}; it holds: {listing}")
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} series; choose one with --series UID: {listing}")
    return series[0]


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read the series (the only one in ``folder``, or the one named) as a float32 HU volume."""
    series = choose_series(folder, series_uid)
    _check_modality(series)
    headers, files, normal, steps = _sorted_slices(series)
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    hu = np.empty((len(files), rows, columns), dtype=np.float32)
    for index, path in enumerate(files):
        hu[index] = _slice_hu(path, rows, columns)
    first = headers[0]
    row_dir, col_dir = _orientation(first)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    slice_step = float(np.median(steps)) if len(steps) else float(first.get("SliceThickness") or 1.0)
    return Volume(
        array=hu,
        spacing=(col_spacing, row_spacing, slice_step),
        origin=tuple(float(v) for v in first.ImagePositionPatient),
        direction=np.column_stack([row_dir, col_dir, normal]),
        metadata={
            "source": str(folder),
            "source_format": "dicom",
            "series_uid": series.uid,
            "series_description": series.description,
            "dicom_files": [str(p) for p in files],
        },
    )


def _read_header(path: Path) -> pydicom.Dataset | None:
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return None
    if "SeriesInstanceUID" not in header or "Rows" not in header:
        return None  # DICOMDIR, structured reports and other non-image objects
    return header


def _check_modality(series: SeriesInfo) -> None:
    modalities = sorted({str(h.get("Modality", "")) for h in series.headers})
    if modalities != ["CT"]:
        raise InputError(
            f"series {series.uid} has modality {'/'.join(modalities) or 'unset'}; "
            "LDCTDenoise denoises CT only (Modality CT)"
        )
    required = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept")
    for header, path in zip(series.headers, series.files):
        missing = [tag for tag in required if tag not in header]
        if missing:
            raise InputError(f"{path} lacks {', '.join(missing)}; cannot place the slice or convert it to HU")


def _orientation(header: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    iop = np.asarray(header.ImageOrientationPatient, dtype=float)
    return iop[:3], iop[3:]


def _sorted_slices(series: SeriesInfo) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Headers and files ordered along the normal, the normal, and the steps between slices."""
    row_dir, col_dir = _orientation(series.headers[0])
    for header, path in zip(series.headers, series.files):
        other_row, other_col = _orientation(header)
        if not (np.allclose(other_row, row_dir, atol=1e-4) and np.allclose(other_col, col_dir, atol=1e-4)):
            raise InputError(f"{path} has another ImageOrientationPatient than the rest of the series")
        if (header.Rows, header.Columns) != (series.headers[0].Rows, series.headers[0].Columns):
            raise InputError(f"{path} has another image size than the rest of the series")
    normal = np.cross(row_dir, col_dir)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in series.headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    steps = np.diff(positions @ normal)
    _check_tilt(series, positions, normal)
    _check_spacing(series, steps, positions @ normal)
    return [series.headers[i] for i in order], [series.files[i] for i in order], normal, steps


def _check_tilt(series: SeriesInfo, positions: np.ndarray, normal: np.ndarray) -> None:
    tilt = float(series.headers[0].get("GantryDetectorTilt", 0) or 0)
    if len(positions) > 1:
        stack = positions[-1] - positions[0]
        cosine = abs(stack @ normal) / max(np.linalg.norm(stack), 1e-9)
        tilt = max(abs(tilt), float(np.degrees(np.arccos(min(cosine, 1.0)))))
    if abs(tilt) > TILT_TOLERANCE_DEG:
        raise InputError(
            f"series {series.uid} is acquired with a gantry tilt of {tilt:.2f} degrees: its slices are "
            "sheared, so a regular grid would misplace them. Resample it to an untilted grid first "
            "(Slicer's DICOM import does this with 'Acquisition geometry regularization' enabled)"
        )


def _check_spacing(series: SeriesInfo, steps: np.ndarray, distances: np.ndarray) -> None:
    if len(steps) == 0:
        return
    if np.any(steps < POSITION_TOLERANCE_MM):
        where = float(distances[1:][steps < POSITION_TOLERANCE_MM][0])
        raise InputError(
            f"series {series.uid} has two slices at the same position ({where:.2f} mm along the normal); "
            "it mixes acquisitions or holds duplicates. Remove the duplicates or split the series"
        )
    regular = float(np.min(steps))
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * regular)
    if np.all(np.abs(steps - regular) <= tolerance):
        return
    multiples = steps / regular
    if np.all(np.abs(multiples - np.round(multiples)) * regular <= tolerance):
        gap = int(np.argmax(steps))
        missing = int(np.sum(np.round(multiples) - 1))
        raise InputError(
            f"series {series.uid} is missing {missing} slice(s): gap of {steps[gap]:.2f} mm after "
            f"{distances[gap]:.2f} mm where it steps {regular:.2f} mm. Re-export the complete series"
        )
    raise InputError(
        f"series {series.uid} has irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); "
        "resample it to a regular grid first (e.g. Slicer's 'Acquisition geometry regularization')"
    )


def _slice_hu(path: Path, rows: int, columns: int) -> np.ndarray:
    dataset = pydicom.dcmread(path)
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises several types when no plugin can decode
        if not syntax.is_compressed:
            raise InputError(f"cannot decode the pixel data of {path}: {error}") from error
        install = DECODERS.get(str(syntax))
        advice = (
            f"install its decoder: pip install {install}"
            if install
            else "no Python decoder is known for it; convert the series to uncompressed DICOM "
            "first (e.g. gdcmconv --raw or dcmdjpeg)"
        )
        raise InputError(f"{path} is compressed as {syntax.name} ({syntax}); {advice}") from error
    if pixels.shape != (rows, columns):
        raise InputError(f"{path} holds pixel data of shape {pixels.shape}; expected one {rows}x{columns} frame")
    slope = float(dataset.RescaleSlope)
    intercept = float(dataset.RescaleIntercept)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
