"""Hostile DICOM headers: every outcome is a correct volume or one InputError, never another exception.

The corpus reproduces the crashes and wrong acceptances a hostile review found (each once a
traceback or a volume with NaN geometry); the fuzz test mutates the headers of a real CT series
(made at test time, nothing committed) with a fixed seed, 300 times, in well under a minute
(``python Testing/fuzz_dicom.py --cases 1000`` runs a longer campaign and prints the figures).
"""

from __future__ import annotations

import shutil
import struct
import time

import numpy as np
import pydicom
import pytest
from fuzz_dicom import READ_TAGS, corrupt_vr, fuzz, make_source, outcome
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian

from conftest import SHARED_CT, small_volume
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import read_volume, write_dicom_series
from LDCTDenoiseLib.io.dicom_write import save_dataset

FUZZ_CASES = 300
FUZZ_SEED = 20261122


def _edit_all(folder, edit) -> None:
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def _set(tag, value):
    def edit(ds):
        if value is _DELETE:
            delattr(ds, tag)
        else:
            setattr(ds, tag, value)
    return edit


_DELETE = object()


def _raw(tag, vr, text: bytes):
    """A value pydicom would refuse to set, written as the raw bytes a broken exporter writes."""
    def edit(ds):
        element = DataElement(tag, vr, b"")
        ds[element.tag] = RawDataElement(element.tag, vr, len(text), text, 0, False, True)
    return edit


def _set_meta(value):
    def edit(ds):
        if value is _DELETE:
            del ds.file_meta.TransferSyntaxUID
        else:
            ds.file_meta.TransferSyntaxUID = value
    return edit


CORPUS = [
    ("IOP one value", _set("ImageOrientationPatient", [1]), "ImageOrientationPatient .* has 1 value"),
    ("IPP two values", _set("ImagePositionPatient", [0, 0]), "ImagePositionPatient .* has 2 value"),
    ("IPP four values", _set("ImagePositionPatient", [0, 0, 0, 0]), "ImagePositionPatient .* has 4 value"),
    ("PixelSpacing one value", _set("PixelSpacing", [0.7]), "PixelSpacing .* has 1 value"),
    ("PixelSpacing three values", _set("PixelSpacing", [0.7, 0.7, 0.7]), "PixelSpacing .* has 3 value"),
    ("RescaleSlope two values", _set("RescaleSlope", [1, 2]), "RescaleSlope .* has 2 value"),
    ("RescaleIntercept empty", _set("RescaleIntercept", ""), "lacks RescaleIntercept"),
    ("TransferSyntaxUID missing", _set_meta(_DELETE), "no TransferSyntaxUID"),
    ("unknown transfer syntax", _set_meta("1.2.3.4.5"), "not a known transfer syntax"),
    ("GantryDetectorTilt garbage", _raw("GantryDetectorTilt", "DS", b"garbage "),
     "GantryDetectorTilt .*(not numeric|cannot be parsed)"),
    ("PixelSpacing as text", _raw("PixelSpacing", "LO", b"wide"), "PixelSpacing .* not numeric"),
    ("Rows 2**31-1", _raw("Rows", "UL", struct.pack("<I", 2147483647)), "Rows 2.14748e\\+09 is not a CT matrix size"),
    ("PixelSpacing NaN", _set("PixelSpacing", ["nan", 0.7]), "PixelSpacing .* not finite"),
    ("PixelSpacing inf", _set("PixelSpacing", ["inf", 0.7]), "PixelSpacing .* not finite"),
    ("PixelSpacing 0", _set("PixelSpacing", [0, 0.7]), "PixelSpacing .* must be positive"),
    ("PixelSpacing negative", _set("PixelSpacing", [-0.7, 0.7]), "PixelSpacing .* must be positive"),
    ("RescaleSlope 0", _set("RescaleSlope", 0), "RescaleSlope 0 would make every voxel"),
    ("RescaleSlope -0", _set("RescaleSlope", "-0"), "RescaleSlope -0 would make every voxel"),
    ("RescaleSlope 1e-320", _set("RescaleSlope", "1e-320"), r"RescaleSlope \S+e-3\d\d would make every voxel"),
    ("RescaleIntercept -inf", _set("RescaleIntercept", "-inf"), "RescaleIntercept .* not finite"),
    ("IOP not orthonormal", _set("ImageOrientationPatient", [2, 0, 0, 0, 2, 0]), "not two orthogonal unit vectors"),
    ("a localizer only", _set("ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]), "only localizer"),
    ("multi-frame", _set("NumberOfFrames", 3), "multi-frame"),
    ("truncated pixel data", lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]), "truncated"),
    ("empty pixel data", _set("PixelData", b""), "PixelData is empty"),
    ("SamplesPerPixel garbage", _raw("SamplesPerPixel", "US", b"garbage "),
     "SamplesPerPixel .*(not numeric|cannot be|has 4 value)"),
    ("SamplesPerPixel three values", _set("SamplesPerPixel", [1, 1, 1]), "SamplesPerPixel .* has 3 value"),
    ("SamplesPerPixel 3 (colour)", _set("SamplesPerPixel", 3), "SamplesPerPixel 3; a CT slice has one sample"),
]


@pytest.mark.parametrize("name, edit, message", CORPUS, ids=[c[0] for c in CORPUS])
def test_each_hostile_header_of_the_corpus_gives_one_input_error_naming_the_tag(dicom_series, name, edit, message):
    folder, _ = dicom_series
    _edit_all(folder, edit)
    with pytest.raises(InputError, match=message):
        read_volume(folder)


def test_a_deflated_file_with_a_broken_stream_is_an_input_error(dicom_series):
    folder, _ = dicom_series
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    save_dataset(ds, path)
    data = bytearray(path.read_bytes())
    data[-200:] = b"\xff" * 200  # corrupt the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(InputError):
        read_volume(folder)


def test_a_file_that_is_not_dicom_is_left_out_with_a_note(dicom_series):
    folder, volume = dicom_series
    (folder / "notes.txt").write_text("not an image")
    read = read_volume(folder)
    assert read.array.shape == volume.array.shape
    assert read.metadata["notes"] == [f"1 file(s) in {folder} are not DICOM images and were left out"]


def test_a_localizer_beside_the_slices_is_left_out_with_a_note(dicom_series):
    folder, volume = dicom_series
    scout = sorted(folder.iterdir())[0]
    shutil.copy(scout, folder / "scout.dcm")
    ds = pydicom.dcmread(folder / "scout.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "scout.dcm")
    read = read_volume(folder)
    assert read.array.shape == volume.array.shape
    assert any("1 localizer (scout) image(s)" in note for note in read.metadata["notes"])


def test_one_ct_volume_beside_a_localizer_series_is_chosen_with_a_note(dicom_series, tmp_path):
    folder, volume = dicom_series
    scout = small_volume(shape=(1, 40, 48), seed=9)
    write_dicom_series(scout, tmp_path / "scout")
    for path in (tmp_path / "scout").iterdir():
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "Scout"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(folder / f"scout-{path.name}")
    read = read_volume(folder)
    np.testing.assert_array_equal(read.array, volume.array)
    assert any("read the only CT volume" in note and "'Scout" in note for note in read.metadata["notes"])


# --- fuzzing --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("fuzz") / "source", SHARED_CT)


@pytest.mark.parametrize("tag", sorted(READ_TAGS))
def test_an_unknown_vr_in_a_tag_the_reader_reads_is_refused_or_read_never_a_traceback(dicom_series, tag):
    folder, _ = dicom_series
    files = sorted(folder.iterdir())

    class Always:  # a stand-in random source (named as such) that picks ``tag``
        def choice(self, options):
            return tag

    assert corrupt_vr(files[1], Always()) == f"VR of {tag}=QQ"
    assert outcome(folder, len(files)) in ("refused", "accepted")


def test_fuzzed_headers_give_a_correct_volume_or_an_input_error(fuzz_source, tmp_path):
    started = time.monotonic()
    outcomes = fuzz(fuzz_source, tmp_path, cases=300, seed=20261122)  # a traceback fails here
    assert time.monotonic() - started < 120
    assert outcomes["refused"] > 75 and outcomes["accepted"] > 10, outcomes
