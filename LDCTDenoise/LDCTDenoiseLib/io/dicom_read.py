"""Read one CT series from a DICOM folder into HU with its geometry, refusing what would mislead.

Slices are ordered by their position along the slice normal (not by file name or
InstanceNumber). HU = stored value * RescaleSlope + RescaleIntercept, per slice, never assumed.
Every tag used is validated first (``dicom_header``). Files left out -- not DICOM images, or
localizer (scout) images beside the slices -- are counted in the volume's ``notes``, never dropped
silently; a folder with one CT volume beside localizers or summaries gets that volume chosen,
with a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from ..errors import InputError
from ..optional import optional_import
from .dicom_header import FIX_EXPORT, SliceGeometry, check_pixel_data, is_localizer, rescale, slice_geometry
from .volume import Volume

sitk = optional_import("SimpleITK")

POSITION_TOLERANCE_MM = 0.01
TILT_TOLERANCE_DEG = 0.1
MILD_IRREGULARITY = 0.25  # steps within this fraction of the median step are resampled; beyond, refused

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


def read_dicom_series(folder: str | Path, series_uid: str | None = None, strict_geometry: bool = False) -> Volume:
    """Read the series (the only one in ``folder``, or the one named) as a float32 HU volume.

    A gantry-tilted series (slice positions sheared off the slice normal) is resampled onto a
    regular, untilted grid in scanner coordinates, with a note -- as Slicer's acquisition geometry
    regularization and dcm2niix do -- and so is a mildly irregular slice spacing (every step within
    25 % of the median), unless ``strict_geometry``, which refuses both.
    """
    series, notes = choose_series(folder, series_uid)
    _check_modality(series)
    series, dropped = _without_localizers(series)
    if dropped:
        notes.append(f"{dropped} localizer (scout) image(s) of series {series.uid} were left out")
    slices, normal, distances, irregular = _sorted_slices(series)
    steps = np.diff(distances)
    first = slices[0]
    shear, tag_tilt = _shear_deg(slices, normal), first.tilt_deg
    _check_placeable(series, shear, tag_tilt, steps, irregular, strict_geometry)
    hu = np.empty((len(slices), first.rows, first.columns), dtype=np.float32)
    for index, geometry in enumerate(slices):
        hu[index] = _slice_hu(geometry.path, first.rows, first.columns)
    slice_step = float(np.median(steps)) if len(steps) else _thickness(series.headers[0])
    if irregular:
        hu = _regular_along_normal(hu, distances - distances[0], slice_step)
        notes.append(f"series {series.uid} has irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm): "
                     f"resampled onto {hu.shape[0]} slices {slice_step:.3f} mm apart (linear interpolation along "
                     "the slice normal)")
    elif shear > TILT_TOLERANCE_DEG:
        hu, origin = _untilted(hu, slices, normal, slice_step)
        notes.append(f"series {series.uid} is gantry-tilted by {shear:.2f} degrees: resampled onto an untilted grid "
                     f"of {hu.shape[2]} x {hu.shape[1]} x {hu.shape[0]} voxels (linear interpolation; voxels "
                     "outside the scanned slab are -1024 HU)")
        first = dataclasses.replace(first, position=origin)
    elif abs(tag_tilt) > TILT_TOLERANCE_DEG:
        notes.append(f"GantryDetectorTilt is {tag_tilt:.2f} degrees, but the slice positions lie along the slice "
                     "normal: the geometry is taken as ImagePositionPatient and ImageOrientationPatient give it")
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
            "resampled": bool(irregular or shear > TILT_TOLERANCE_DEG),
            "slice_thickness_mm": _stated_thickness(series.headers[0]),
            "convolution_kernel": stated_kernel(series.headers[0]),
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


def _stated_thickness(header: pydicom.Dataset) -> float | None:
    """SliceThickness when the header states a positive number (adaptation's overlap guard), else None."""
    try:
        thickness = float(header.get("SliceThickness") or 0.0)
    except (TypeError, ValueError):
        return None
    return thickness if np.isfinite(thickness) and thickness > 0 else None


def stated_kernel(header: pydicom.Dataset) -> str | None:
    """ConvolutionKernel's first value where the header states one (the keep-noise follows it), else None."""
    value = header.get("ConvolutionKernel")
    if isinstance(value, MultiValue):  # Siemens writes "Br40d\\3": the kernel, then its strength
        value = value[0] if len(value) else None
    text = str(value).strip() if value is not None else ""
    return text or None


def folder_kernel(folder: str | Path) -> str | None:
    """The ConvolutionKernel the first DICOM image under ``folder`` states; None for a file or no statement."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is not None:
            return stated_kernel(header)
    return None


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


def _sorted_slices(series: SeriesInfo) -> tuple[list[SliceGeometry], np.ndarray, np.ndarray, bool]:
    """Validated slice geometries ordered along the normal, the normal, their distances along it (mm),
    and whether the spacing is mildly irregular (to be resampled)."""
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
    slices, distances = [slices[i] for i in order], distances[order]
    irregular = _check_spacing(series, np.diff(distances), distances)
    return slices, normal, distances, irregular


def _shear_deg(slices: list[SliceGeometry], normal: np.ndarray) -> float:
    """The angle between the stack of slice positions and the slice normal (the gantry tilt), degrees."""
    if len(slices) < 2:
        return 0.0
    stack = slices[-1].position - slices[0].position
    cosine = abs(stack @ normal) / max(float(np.linalg.norm(stack)), 1e-9)
    return float(np.degrees(np.arccos(min(cosine, 1.0))))


def _untilted(hu: np.ndarray, slices: list[SliceGeometry], normal: np.ndarray,
              slice_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a sheared stack onto the grid of its in-plane axes and the slice normal (scanner coordinates).

    The source grid is exact: its third axis is the mean step between slice positions, not the normal.
    The target keeps the pixel size and the step along the normal, and grows in-plane to hold the
    whole sheared slab. Returns the voxels and the new origin.
    """
    first = slices[0]
    stack = (slices[-1].position - first.position) / (len(slices) - 1)
    source = sitk.GetImageFromArray(hu)
    source.SetSpacing((first.col_spacing, first.row_spacing, float(np.linalg.norm(stack))))
    source.SetOrigin(tuple(first.position))
    source.SetDirection(np.column_stack([first.row_dir, first.col_dir, stack / np.linalg.norm(stack)]).ravel().tolist())
    frame = np.column_stack([first.row_dir, first.col_dir, normal])
    corners = [np.asarray(source.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))
               for i in (0, hu.shape[2] - 1) for j in (0, hu.shape[1] - 1) for k in (0, hu.shape[0] - 1)]
    along = np.array([frame.T @ (c - first.position) for c in corners])
    low, high = along.min(axis=0), along.max(axis=0)
    columns = int(np.ceil((high[0] - low[0]) / first.col_spacing - 1e-6)) + 1
    rows = int(np.ceil((high[1] - low[1]) / first.row_spacing - 1e-6)) + 1
    origin = first.position + frame @ np.array([low[0], low[1], 0.0])
    target = sitk.Image(columns, rows, hu.shape[0], sitk.sitkFloat32)
    target.SetSpacing((first.col_spacing, first.row_spacing, slice_step))
    target.SetOrigin(tuple(origin))
    target.SetDirection(frame.ravel().tolist())
    resampled = sitk.Resample(source, target, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled), origin


def _check_placeable(series: SeriesInfo, shear: float, tag_tilt: float, steps: np.ndarray, irregular: bool,
                     strict_geometry: bool) -> None:
    """Refuse what ``strict_geometry`` forbids and what no single regular grid can hold."""
    tilt = max(shear, abs(tag_tilt))
    if strict_geometry and tilt > TILT_TOLERANCE_DEG:
        raise InputError(
            f"series {series.uid} is acquired with a gantry tilt of {tilt:.2f} degrees "
            "and --strict-geometry refuses tilted series; drop it to have the series resampled onto an "
            "untilted grid, or resample it yourself (Slicer: 'Acquisition geometry regularization')"
        )
    if irregular and strict_geometry:
        raise InputError(
            f"series {series.uid} has irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm) and "
            "--strict-geometry refuses it; drop it to have the series resampled onto a regular grid"
        )
    if irregular and shear > TILT_TOLERANCE_DEG:
        raise InputError(
            f"series {series.uid} is both gantry-tilted ({shear:.2f} degrees) and irregularly spaced "
            f"({steps.min():.3f} to {steps.max():.3f} mm), which LDCTDenoise does not resample in one step; "
            "regularize it first (Slicer: 'Acquisition geometry regularization', or dcm2niix)"
        )


def _mildly_irregular(series: SeriesInfo, steps: np.ndarray) -> bool:
    """True for steps that vary by at most ``MILD_IRREGULARITY`` of their median (regular: False)."""
    if len(steps) == 0:
        return False
    median = float(np.median(steps))
    if np.all(np.abs(steps - median) <= max(POSITION_TOLERANCE_MM, 0.01 * median)):
        return False
    if np.all(np.abs(steps - median) <= MILD_IRREGULARITY * median):
        return True
    raise InputError(
        f"series {series.uid} has irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm, more than "
        f"{MILD_IRREGULARITY:.0%} off the median {median:.3f} mm), which interpolation would fill with guesses; "
        "check the series is complete, or resample it yourself (Slicer's 'Acquisition geometry regularization')"
    )


def _regular_along_normal(hu: np.ndarray, distances: np.ndarray, step: float) -> np.ndarray:
    """Slices at ``0, step, 2 step, ...`` along the normal, linearly interpolated between the nearest two."""
    count = int(np.floor(distances[-1] / step + 1e-6)) + 1
    targets = np.arange(count) * step
    upper = np.clip(np.searchsorted(distances, targets, side="right"), 1, len(distances) - 1)
    weight = ((targets - distances[upper - 1]) / (distances[upper] - distances[upper - 1])).astype(np.float32)
    weight = np.clip(weight, 0.0, 1.0)[:, None, None]
    return (1 - weight) * hu[upper - 1] + weight * hu[upper]


def _check_spacing(series: SeriesInfo, steps: np.ndarray, distances: np.ndarray) -> bool:
    """Refuse duplicates, missing slices and strong irregularity; True for a mildly irregular spacing."""
    if len(steps) == 0:
        return False
    if np.any(steps < POSITION_TOLERANCE_MM):
        where = float(distances[1:][steps < POSITION_TOLERANCE_MM][0])
        raise InputError(
            f"series {series.uid} has two slices at the same position ({where:.2f} mm along the normal); "
            "it mixes acquisitions or holds duplicates. Remove the duplicates or split the series"
        )
    regular = float(np.min(steps))
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * regular)
    if np.all(np.abs(steps - regular) <= tolerance):
        return False
    multiples = steps / regular
    if np.all(np.abs(multiples - np.round(multiples)) * regular <= tolerance):
        gap = int(np.argmax(steps))
        missing = int(np.sum(np.round(multiples) - 1))
        raise InputError(
            f"series {series.uid} is missing {missing} slice(s): gap of {steps[gap]:.2f} mm after "
            f"{distances[gap]:.2f} mm where it steps {regular:.2f} mm. Re-export the complete series"
        )
    return _mildly_irregular(series, steps)


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
                         f"range; {FIX_EXPORT}")
    return hu
