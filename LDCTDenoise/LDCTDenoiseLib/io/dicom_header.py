"""Every DICOM tag the reader uses, checked before it is used: presence, multiplicity, finiteness, range.

A header from a scanner, a PACS export or a hand-edited file can hold anything (one value where
six are due, NaN, a zero slope, 2**31 rows). Each check here turns such a value into one
``InputError`` naming the file, the tag, the value and what to do, before any array is allocated
from it, so a bad file can never crash the reader or produce a volume with a meaningless geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID

from ..errors import InputError

MAX_MATRIX = 4096  # rows or columns; CT images are 512 to 2048
ORTHONORMAL_TOLERANCE = 1e-3
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
FIX_EXPORT = "re-export the series from the scanner or PACS"
MIN_RESCALE_SLOPE = 1e-6  # scanners write 1 (or 0.5-2); below this every stored value maps to the intercept


@dataclass(frozen=True)
class SliceGeometry:
    """Where one slice lies, from its validated header."""

    path: Path
    position: np.ndarray  # ImagePositionPatient, mm (LPS)
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    row_spacing: float
    col_spacing: float
    rows: int
    columns: int
    tilt_deg: float

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)


def slice_geometry(header: pydicom.Dataset, path: Path) -> SliceGeometry:
    """The slice's geometry, or an ``InputError`` saying which tag is unusable and why."""
    _check_single_frame(header, path)
    iop = numbers(header, "ImageOrientationPatient", 6, path)
    row_dir, col_dir = iop[:3], iop[3:]
    if not _orthonormal(row_dir, col_dir):
        raise InputError(f"{path.name}: ImageOrientationPatient {list(iop)} is not two orthogonal unit vectors; "
                         f"the slice cannot be placed. {FIX_EXPORT}")
    spacing = numbers(header, "PixelSpacing", 2, path)
    if np.any(spacing <= 0):
        raise InputError(f"{path.name}: PixelSpacing {list(spacing)} must be positive; {FIX_EXPORT}")
    return SliceGeometry(
        path=path,
        position=numbers(header, "ImagePositionPatient", 3, path),
        row_dir=row_dir,
        col_dir=col_dir,
        row_spacing=float(spacing[0]),
        col_spacing=float(spacing[1]),
        rows=_matrix_size(header, "Rows", path),
        columns=_matrix_size(header, "Columns", path),
        tilt_deg=_tilt(header, path),
    )


def rescale(dataset: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept: the map from stored values to HU (slope never 0)."""
    slope = numbers(dataset, "RescaleSlope", 1, path)[0]
    intercept = numbers(dataset, "RescaleIntercept", 1, path)[0]
    if abs(slope) < MIN_RESCALE_SLOPE:
        raise InputError(f"{path.name}: RescaleSlope {slope:g} would make every voxel {intercept:g} HU (a CT slope is "
                         f"about 1); {FIX_EXPORT}")
    return float(slope), float(intercept)


def check_pixel_data(dataset: pydicom.Dataset, path: Path, rows: int, columns: int) -> None:
    """A known transfer syntax, and uncompressed pixel data as long as the header says (before decoding)."""
    meta = getattr(dataset, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None:
        raise InputError(f"{path.name} has no TransferSyntaxUID in its file meta information, so its pixel data "
                         f"cannot be decoded; {FIX_EXPORT} as DICOM Part 10 files")
    syntax = UID(str(syntax))
    if not _is_transfer_syntax(syntax):
        raise InputError(f"{path.name}: TransferSyntaxUID {syntax} is not a known transfer syntax; {FIX_EXPORT}")
    if "PixelData" not in dataset:
        raise InputError(f"{path.name} holds no PixelData; it is not an image")
    pixel_data = _value(dataset, "PixelData", path)
    if not pixel_data:
        raise InputError(f"{path.name}: its PixelData is empty; the file was cut short. {FIX_EXPORT}")
    samples = int(numbers(dataset, "SamplesPerPixel", 1, path)[0]) if "SamplesPerPixel" in dataset else 1
    if samples != 1:
        raise InputError(f"{path.name}: SamplesPerPixel {samples}; a CT slice has one sample per pixel (grayscale). "
                         f"{FIX_EXPORT}")
    if syntax.is_compressed or syntax.is_deflated:
        return  # its length says nothing; the decoder checks it
    bits = int(numbers(dataset, "BitsAllocated", 1, path)[0])
    if bits not in (8, 16, 32):
        raise InputError(f"{path.name}: BitsAllocated {bits} is not 8, 16 or 32; {FIX_EXPORT}")
    expected = rows * columns * bits // 8
    if len(pixel_data) < expected:
        raise InputError(f"{path.name}: PixelData holds {len(pixel_data)} bytes where Rows x Columns "
                         f"({rows} x {columns}) at {bits} bits need {expected}; the file is truncated. {FIX_EXPORT}")


def _is_transfer_syntax(syntax: UID) -> bool:
    try:
        return bool(syntax.is_transfer_syntax)
    except ValueError:  # pydicom 2.4 raises for private UIDs instead of answering False
        return False


def numbers(header: pydicom.Dataset, tag: str, count: int, path: Path) -> np.ndarray:
    """``count`` finite numbers from ``tag``, or an ``InputError`` naming the file, tag and value."""
    value = _value(header, tag, path)
    if value in (None, ""):
        raise InputError(f"{path.name} lacks {tag}; {_why(tag)}. {FIX_EXPORT}")
    try:
        result = np.array([float(item) for item in _as_list(value)], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{path.name}: {tag} {_shown(value)} is not numeric; {FIX_EXPORT}") from None
    if result.size != count:
        raise InputError(f"{path.name}: {tag} {_shown(value)} has {result.size} value(s) where {count} are due; "
                         f"{FIX_EXPORT}")
    if not np.all(np.isfinite(result)):
        raise InputError(f"{path.name}: {tag} {_shown(value)} is not finite; {FIX_EXPORT}")
    return result


def is_localizer(header: pydicom.Dataset) -> bool:
    """A scout / localizer / topogram image (ImageType ...\\LOCALIZER): not a slice of a volume."""
    try:
        image_type = header.get("ImageType") or []
    except Exception:  # an unparseable ImageType says nothing either way
        return False
    return "LOCALIZER" in [str(v).upper() for v in _as_list(image_type)]


def _as_list(value) -> list:
    """A DICOM value as a list of its items: one-valued tags come as the bare value."""
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _value(header: pydicom.Dataset, tag: str, path: Path):
    """The tag's value, None when absent; a value pydicom cannot parse for its VR is an ``InputError``."""
    try:
        return header.get(tag)
    except Exception as error:  # pydicom converts lazily: a DS of 'garbage' raises here
        raise InputError(f"{path.name}: {tag} cannot be parsed ({error}); {FIX_EXPORT}") from None


def _check_single_frame(header: pydicom.Dataset, path: Path) -> None:
    frames = _value(header, "NumberOfFrames", path)
    try:
        frames = int(frames or 1)
    except (TypeError, ValueError):
        frames = 2
    if str(_value(header, "SOPClassUID", path) or "") == ENHANCED_CT or frames > 1:
        raise InputError(f"{path.name} is a multi-frame (Enhanced CT) image; LDCTDenoise reads classic single-frame "
                         "CT series. Convert it first (e.g. Slicer's DICOM module loads it; save as NRRD)")


def _matrix_size(header: pydicom.Dataset, tag: str, path: Path) -> int:
    value = numbers(header, tag, 1, path)[0]
    if value != int(value) or not 1 <= value <= MAX_MATRIX:
        raise InputError(f"{path.name}: {tag} {value:g} is not a CT matrix size (1 to {MAX_MATRIX}); {FIX_EXPORT}")
    return int(value)


def _tilt(header: pydicom.Dataset, path: Path) -> float:
    if _value(header, "GantryDetectorTilt", path) in (None, ""):
        return 0.0
    tilt = numbers(header, "GantryDetectorTilt", 1, path)[0]
    if abs(tilt) >= 90:
        raise InputError(f"{path.name}: GantryDetectorTilt {tilt:g} degrees is impossible; {FIX_EXPORT}")
    return float(tilt)


def _orthonormal(row_dir: np.ndarray, col_dir: np.ndarray) -> bool:
    tolerance = ORTHONORMAL_TOLERANCE
    return (abs(np.linalg.norm(row_dir) - 1) < tolerance and abs(np.linalg.norm(col_dir) - 1) < tolerance
            and abs(row_dir @ col_dir) < tolerance)


def _why(tag: str) -> str:
    if tag.startswith("Rescale"):
        return "its stored values cannot be converted to HU (never assumed)"
    return "the slice cannot be placed in space"


def _shown(value) -> str:
    text = repr(list(value)) if isinstance(value, pydicom.multival.MultiValue) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
