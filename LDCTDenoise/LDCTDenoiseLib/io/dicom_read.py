"""Read one CT series from a DICOM folder into HU with its geometry, refusing what would mislead.

Slices are ordered by their position along the slice normal (not by file name or
InstanceNumber). HU = stored value * RescaleSlope + RescaleIntercept, per slice, never assumed.
Every tag used is validated first (``dicom_header``). Files left out -- not DICOM images, or
localizer (scout) images beside the slices -- are counted in the volume's ``notes``, never dropped
silently; a folder with one CT volume beside localizers or summaries gets that volume chosen,
with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from .dicom_header import SliceGeometry, check_pixel_data, is_localizer, rescale, slice_geometry
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
    return scan_folder(folder)[0]


def scan_folder(folder: str | Path) -> tuple[list[SeriesInfo], int]:
    """The image series under ``folder`` and how many files were not DICOM images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    found: dict[str, SeriesInfo] = {}
    skipped = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is None:
            skipped += 1
            continue
        uid = str(header.SeriesInstanceUID)
        if uid not in found:
            description = str(header.get("SeriesDescription", ""))
            found[uid] = SeriesInfo(uid, description, str(header.get("Modality", "?")), [], [])
        found[uid].headers.append(header)
        found[uid].files.append(path)
    return list(found.values()), skipped


def choose_series(folder: str | Path, series_uid: str | None = None) -> tuple[SeriesInfo, list[str]]:
    """The series to read, and notes on what was chosen or left out."""
    series, skipped = scan_folder(folder)
    notes = [f"{skipped} file(s) in {folder} are not DICOM images and were left out"] if skipped else []
    if not series:
        raise InputError(f"no DICOM image files found in {folder}")
    listing = "; ".join(str(s) for s in series)
    if series_uid is not None:
        for candidate in series:
            if candidate.uid == series_uid:
                return candidate, notes
        raise InputError(f"series {series_uid} is not in {folder}; it holds: {listing}")
    if len(series) == 1:
        return series[0], notes
    volumes = [s for s in series if _is_ct_volume(s)]
    if len(volumes) == 1:
        others = ", ".join(f"'{s.description or s.uid}'" for s in series if s is not volumes[0])
        notes.append(f"{folder} holds {len(series)} series; read the only CT volume, {volumes[0]}, "
                     f"and left out {others} (localizers, single images, other modalities)")
        return volumes[0], notes
    raise InputError(f"{folder} holds {len(series)} series; choose one with --series UID: {listing}")


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read the series (the only one in ``folder``, or the one named) as a float32 HU volume."""
    series, notes = choose_series(folder, series_uid)
    _check_modality(series)
    series, dropped = _without_localizers(series)
    if dropped:
        notes.append(f"{dropped} localizer (scout) image(s) of series {series.uid} were left out")
    slices, normal, steps = _sorted_slices(series)
    first = slices[0]
    hu = np.empty((len(slices), first.rows, first.columns), dtype=np.float32)
    for index, geometry in enumerate(slices):
        hu[index] = _slice_hu(geometry.path, first.rows, first.columns)
    slice_step = float(np.median(steps)) if len(steps) else _thickness(series.headers[0])
    return Volume(
        array=hu,
        spacing=(first.col_spacing, first.row_spacing, slice_step),
        origin=tuple(float(v) for v in first.position),
        direction=np.column_stack([first.row_dir, first.col_dir, normal]),
        metadata={
            "source": str(folder),
            "source_format": "dicom",
            "series_uid": series.uid,
            "series_description": series.description,
            "dicom_files": [str(g.path) for g in slices],
            "notes": notes,
        },
    )


def _is_ct_volume(series: SeriesInfo) -> bool:
    """CT image slices (more than one, not all localizers): what a user means by 'the scan'."""
    return (series.modality == "CT" and len(series.files) > 1
            and sum(not is_localizer(h) for h in series.headers) > 1)


def _without_localizers(series: SeriesInfo) -> tuple[SeriesInfo, int]:
    keep = [i for i, header in enumerate(series.headers) if not is_localizer(header)]
    if not keep:
        raise InputError(f"series {series.uid} holds only localizer (scout) images, which are projections, not "
                         "CT slices; choose the axial series with --series UID")
    dropped = len(series.headers) - len(keep)
    return SeriesInfo(series.uid, series.description, series.modality, [series.headers[i] for i in keep],
                      [series.files[i] for i in keep]), dropped


def _thickness(header: pydicom.Dataset) -> float:
    """A one-slice series' extent along the normal: SliceThickness when it is a positive number, else 1 mm."""
    try:
        thickness = float(header.get("SliceThickness") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return thickness if np.isfinite(thickness) and thickness > 0 else 1.0


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM image file; None for other files; an error for a damaged DICOM file."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if "SeriesInstanceUID" not in header or "Rows" not in header:
            return None  # DICOMDIR, structured reports and other non-image objects
        str(header.SeriesInstanceUID)
    except InvalidDicomError:
        return None
    except Exception as error:  # pydicom raises many types (zlib, struct, ValueError) on damaged files
        if _has_dicom_preamble(path):
            raise InputError(f"{path} is a damaged DICOM file ({type(error).__name__}: {error}); remove it from "
                             "the folder or re-export the series") from None
        return None
    return header


def _has_dicom_preamble(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(132)[128:] == b"DICM"


def _check_modality(series: SeriesInfo) -> None:
    modalities = sorted({str(h.get("Modality", "")) for h in series.headers})
    if modalities != ["CT"]:
        raise InputError(
            f"series {series.uid} has modality {'/'.join(modalities) or 'unset'}; "
            "LDCTDenoise denoises CT only (Modality CT)"
        )


def _sorted_slices(series: SeriesInfo) -> tuple[list[SliceGeometry], np.ndarray, np.ndarray]:
    """Validated slice geometries ordered along the normal, the normal, and the steps between slices."""
    slices = [slice_geometry(header, path) for header, path in zip(series.headers, series.files)]
    first = slices[0]
    for other in slices[1:]:
        if not (np.allclose(other.row_dir, first.row_dir, atol=1e-4)
                and np.allclose(other.col_dir, first.col_dir, atol=1e-4)):
            raise InputError(f"{other.path} has another ImageOrientationPatient than the rest of the series")
        if (other.rows, other.columns) != (first.rows, first.columns):
            raise InputError(f"{other.path} has another image size than the rest of the series")
    normal = first.normal
    distances = np.array([g.position @ normal for g in slices])
    order = np.argsort(distances, kind="stable")
    slices = [slices[i] for i in order]
    positions = np.array([g.position for g in slices])
    steps = np.diff(positions @ normal)
    _check_tilt(series, slices, positions, normal)
    _check_spacing(series, steps, positions @ normal)
    return slices, normal, steps


def _check_tilt(series: SeriesInfo, slices: list[SliceGeometry], positions: np.ndarray, normal: np.ndarray) -> None:
    tilt = slices[0].tilt_deg
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
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types on damaged files
        raise InputError(f"cannot read {path}: {error}") from error
    check_pixel_data(dataset, path, rows, columns)
    slope, intercept = rescale(dataset, path)
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
    hu = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if not np.all(np.isfinite(hu)):
        raise InputError(f"{path}: RescaleSlope {slope:g} and RescaleIntercept {intercept:g} give HU beyond float "
                         "range; re-export the series from the scanner or PACS")
    return hu
