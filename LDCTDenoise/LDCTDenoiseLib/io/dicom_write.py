"""Write a volume as a derived CT series that PACS and Slicer file next to its source.

Patient, study and equipment tags are copied from the source series when the volume came
from DICOM; the series and every instance get new UIDs, ImageType DERIVED\\SECONDARY, and the
geometry of the volume. Pixels are int16 HU (RescaleSlope 1, RescaleIntercept 0).
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..atomic import atomic_folder
from ..errors import OutputError
from .volume import Volume

logger = logging.getLogger(__name__)

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])

# Tags describing the stored pixels of the source; they are recomputed or dropped.
PIXEL_TAGS = (
    "PixelData", "SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
    "PixelPaddingRangeLimit", "SmallestPixelValueInSeries", "LargestPixelValueInSeries",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
)
INT16 = np.iinfo(np.int16)


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    description_suffix: str = "denoised (LDCTDenoise)",
    derivation: str = "Denoised with LDCTDenoise",
) -> list[Path]:
    """Write one file per slice into a new folder; the folder appears only when all are written."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"{folder} already exists and is not an empty folder; choose a new output folder")
    if not folder.parent.is_dir():
        raise OutputError(f"parent folder {folder.parent} does not exist")
    sources = _source_headers(volume)
    series_uid = generate_uid()
    now = datetime.now()
    names = []
    with atomic_folder(folder) as tmp:
        for index in range(volume.array.shape[0]):
            source = sources[index] if sources else None
            dataset = _slice_dataset(volume, index, source, series_uid, now, description_suffix, derivation)
            name = f"IM{index + 1:05d}.dcm"
            save_dataset(dataset, tmp / name)
            names.append(name)
    return [folder / name for name in names]


def save_dataset(dataset: pydicom.Dataset, path: Path) -> None:
    """Write a DICOM Part 10 file (preamble and file meta) with pydicom 3 or 2.4, which Slicer 5.8 ships."""
    if PYDICOM_MAJOR >= 3:
        dataset.save_as(path, enforce_file_format=True)
    else:
        dataset.save_as(path, write_like_original=False)


def _source_headers(volume: Volume) -> list[pydicom.Dataset] | None:
    files = volume.metadata.get("dicom_files")
    if not files:
        return None
    if volume.metadata.get("resampled") or len(files) != volume.array.shape[0]:
        return [pydicom.dcmread(files[0], stop_before_pixels=True)] * volume.array.shape[0]  # patient/study kept
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _slice_dataset(
    volume: Volume,
    index: int,
    source: pydicom.Dataset | None,
    series_uid: str,
    now: datetime,
    description_suffix: str,
    derivation: str,
) -> pydicom.Dataset:
    dataset = _copy_header(source) if source is not None else _new_header(now)
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.Modality = "CT"
    dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    source_description = str(source.get("SeriesDescription", "")) if source is not None else ""
    dataset.SeriesDescription = f"{source_description} {description_suffix}".strip()[:64]
    dataset.SeriesNumber = int(source.get("SeriesNumber") or 0) + 1000 if source is not None else 1000
    dataset.InstanceNumber = index + 1
    dataset.DerivationDescription = derivation[:1024]
    dataset.SeriesDate = now.strftime("%Y%m%d")
    dataset.SeriesTime = now.strftime("%H%M%S")
    if source is not None:
        reference = pydicom.Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        dataset.SourceImageSequence = [reference]
    _set_geometry(dataset, volume, index)
    _set_pixels(dataset, volume.array[index])
    return dataset


def _copy_header(source: pydicom.Dataset) -> pydicom.Dataset:
    """The source's public elements but pixel data and file meta; private ones are never decoded.

    Vendors' private elements may not match pydicom's private dictionary (a Philips DS value under
    a tag the dictionary calls FD): decoding them would fail, and a derived series leaves them out.
    A public element that cannot be decoded is left out with a warning.
    """
    dataset = pydicom.Dataset()
    for tag in source.keys():
        if tag.is_private or tag.group == 0x0002:
            continue
        try:
            element = source[tag]
        except Exception as error:  # pydicom raises several types for malformed values
            logger.warning("left out %s of the source header: its value cannot be decoded (%s)", tag, error)
            continue
        if element.keyword not in PIXEL_TAGS:
            dataset.add(copy.deepcopy(element))
    return dataset


def _new_header(now: datetime) -> pydicom.Dataset:
    """Patient and study for a volume that did not come from DICOM (e.g. an NRRD file)."""
    dataset = pydicom.Dataset()
    dataset.PatientName = "Anonymous"
    dataset.PatientID = "LDCTDenoise"
    dataset.StudyInstanceUID = generate_uid()
    dataset.FrameOfReferenceUID = generate_uid()
    dataset.StudyDate = now.strftime("%Y%m%d")
    dataset.StudyTime = now.strftime("%H%M%S")
    dataset.StudyID = "1"
    dataset.AccessionNumber = ""
    dataset.ReferringPhysicianName = ""
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    dataset.Manufacturer = "LDCTDenoise"
    return dataset


def _set_geometry(dataset: pydicom.Dataset, volume: Volume, index: int) -> None:
    position = volume.index_to_world([0, 0, index])[0]
    direction = volume.direction
    dataset.ImagePositionPatient = [_ds(v) for v in position]
    dataset.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    dataset.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[0])]
    dataset.SliceThickness = dataset.get("SliceThickness") or _ds(volume.spacing[2])
    dataset.SpacingBetweenSlices = _ds(volume.spacing[2])
    dataset.SliceLocation = _ds(float(position @ direction[:, 2]))


def _set_pixels(dataset: pydicom.Dataset, hu: np.ndarray) -> None:
    stored = np.clip(np.rint(hu), INT16.min, INT16.max).astype(np.int16)
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    dataset.RescaleSlope = 1
    dataset.RescaleIntercept = 0
    dataset.RescaleType = "HU"
    dataset.PixelData = stored.tobytes()


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string with as many digits as its 16 characters allow."""
    return format_number_as_ds(float(value))
