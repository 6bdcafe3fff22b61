"""Reading DICOM series and volume files to HU with geometry; writing volumes and derived series."""

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, RLELossless
from scipy.ndimage import gaussian_filter

from conftest import small_volume
from LDCTDenoiseLib.errors import InputError, OutputError
from LDCTDenoiseLib.io import Volume, dicom_write, list_series, read_volume, write_dicom_series, write_volume
from LDCTDenoiseLib.simulation import make_phantom

REAL_SERIES = ["lidc-idri/LIDC-IDRI-0001", "lidc-idri/LIDC-IDRI-0002", "lidc-idri/LIDC-IDRI-0003", "thorax-141"]


def assert_same_geometry(a: Volume, b: Volume, atol=1e-4):
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


@pytest.mark.parametrize("name", REAL_SERIES)
def test_real_series_hu_and_geometry_equal_simpleitk_reading(shared_ct, name):
    folder = shared_ct / name
    ours = read_volume(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    theirs = Volume.from_sitk(reader.Execute())
    np.testing.assert_array_equal(ours.array, theirs.array.astype(np.float32))
    assert_same_geometry(ours, theirs)
    assert ours.array.dtype == np.float32 and ours.array.min() < -900  # HU: air is about -1000


def test_slices_are_ordered_by_position_not_file_name(dicom_series):
    folder, volume = dicom_series
    files = sorted(folder.iterdir())
    for index, path in enumerate(files):  # names now run opposite to the positions
        path.rename(folder / f"z{len(files) - index:03d}.dcm")
    read = read_volume(folder)
    np.testing.assert_array_equal(read.array, volume.array)


def test_dicom_round_trip_keeps_voxels_and_rotated_geometry(dicom_series):
    folder, volume = dicom_series
    read = read_volume(folder)
    np.testing.assert_array_equal(read.array, volume.array)
    assert_same_geometry(read, volume, atol=1e-5)
    assert not np.allclose(read.direction, np.eye(3))


def test_rescale_slope_and_intercept_are_applied_per_slice(dicom_series):
    folder, volume = dicom_series
    path = sorted(folder.iterdir(), key=lambda p: pydicom.dcmread(p).InstanceNumber)[2]
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.int32)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.PixelData = ((stored + 1024) // 2).astype(np.int16).tobytes()  # HU = 2 * stored - 1024
    ds.save_as(path)
    read = read_volume(folder)
    expected = 2 * ((stored + 1024) // 2) - 1024
    np.testing.assert_array_equal(read.array[2], expected.astype(np.float32))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_volume_files_keep_voxels_and_rotated_geometry(tmp_path, suffix):
    volume = small_volume()
    path = tmp_path / f"v{suffix}"
    write_volume(volume, path)
    read = read_volume(path)
    np.testing.assert_array_equal(read.array, volume.array)
    assert_same_geometry(read, volume, atol=1e-5)


def test_derived_series_has_new_uids_derived_type_and_keeps_patient_and_study(dicom_series, tmp_path):
    folder, _ = dicom_series
    source = read_volume(folder)
    originals = [pydicom.dcmread(p) for p in source.metadata["dicom_files"]]
    written = write_volume(source.with_array(source.array + 0.4), tmp_path / "derived")
    derived = [pydicom.dcmread(p) for p in written]
    assert len({d.SeriesInstanceUID for d in derived}) == 1
    assert derived[0].SeriesInstanceUID != originals[0].SeriesInstanceUID
    assert not {d.SOPInstanceUID for d in derived} & {o.SOPInstanceUID for o in originals}
    assert len(derived) == len(originals)
    for d, o in zip(derived, originals):
        assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "denoised" in d.SeriesDescription
        assert (d.PatientID, d.PatientName, d.StudyInstanceUID) == (o.PatientID, o.PatientName, o.StudyInstanceUID)
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == o.SOPInstanceUID
        assert d.pixel_array.dtype == np.int16 and d.PixelRepresentation == 1
        assert (d.RescaleSlope, d.RescaleIntercept) == (1, 0)
    again = read_volume(tmp_path / "derived")
    np.testing.assert_array_equal(again.array, np.rint(source.array + 0.4))
    assert_same_geometry(again, source, atol=1e-5)


def test_volume_without_dicom_source_gets_a_new_study(tmp_path):
    volume = small_volume(direction=np.eye(3))
    write_volume(volume, tmp_path / "out")
    read = read_volume(tmp_path / "out")
    np.testing.assert_array_equal(read.array, volume.array)
    assert_same_geometry(read, volume, atol=1e-5)


def test_failed_dicom_write_leaves_no_folder(tmp_path, monkeypatch):
    calls = []
    original = pydicom.Dataset.save_as

    def fail_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(small_volume(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_dicom_output_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an empty folder"):
        write_volume(small_volume(), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_unknown_output_extension_is_refused(tmp_path):
    with pytest.raises(OutputError, match="unknown output format"):
        write_volume(small_volume(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


# --- bad inputs: each has its own clear message -------------------------------------------------


def _edit(folder, index, **tags):
    path = sorted(folder.iterdir(), key=lambda p: pydicom.dcmread(p).InstanceNumber)[index]
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_folder_with_two_series_lists_them_and_reads_the_chosen_one(dicom_series, tmp_path):
    folder, volume = dicom_series
    other = small_volume(shape=(3, 40, 48), seed=5)
    write_dicom_series(other, tmp_path / "second")
    for path in (tmp_path / "second").iterdir():
        shutil.move(path, folder / f"second-{path.name}")
    series = list_series(folder)
    assert sorted(len(s.files) for s in series) == [3, 6]
    with pytest.raises(InputError, match="holds 2 series; choose one with --series UID") as error:
        read_volume(folder)
    for s in series:
        assert s.uid in str(error.value)
    chosen = next(s for s in series if len(s.files) == 3)
    np.testing.assert_array_equal(read_volume(folder, chosen.uid).array, other.array)
    with pytest.raises(InputError, match="is not in"):
        read_volume(folder, "1.2.3.4")


def test_non_ct_modality_is_refused(dicom_series):
    folder, _ = dicom_series
    for index in range(6):
        _edit(folder, index, Modality="MR")
    with pytest.raises(InputError, match="modality MR; LDCTDenoise denoises CT only"):
        read_volume(folder)


def test_missing_slice_is_detected(dicom_series):
    folder, _ = dicom_series
    _edit(folder, 3, Modality="CT").unlink()
    with pytest.raises(InputError, match=r"missing 1 slice\(s\): gap of 5.00 mm"):
        read_volume(folder)


def test_strongly_irregular_spacing_is_refused(dicom_series):
    folder, volume = dicom_series
    moved = np.asarray(volume.index_to_world([0, 0, 3.4])[0])  # steps of 1.4 and 0.6 slices
    _edit(folder, 3, ImagePositionPatient=[f"{v:.6f}" for v in moved])
    with pytest.raises(InputError, match=r"irregular slice spacing .* more than 25% off the median"):
        read_volume(folder)


def _irregular_acquisition(folder, offsets_mm):
    """Slices of a volume that is linear along z (so linear interpolation is exact), at ``offsets_mm``."""
    phantom = make_phantom((len(offsets_mm), 64, 64), slice_mm=2.0, seed=2)
    ramp_hu_per_mm = 7.0
    slices = np.stack([phantom.array[0] + ramp_hu_per_mm * z for z in offsets_mm])
    write_dicom_series(phantom.with_array(slices), folder)
    for index, z in enumerate(offsets_mm):
        _edit(folder, index, ImagePositionPatient=[*phantom.origin[:2], phantom.origin[2] + z])
    return phantom, ramp_hu_per_mm


def test_mildly_irregular_spacing_is_resampled_onto_the_median_step_with_a_note(tmp_path):
    offsets = np.array([0.0, 2.0, 4.3, 6.0, 8.2, 10.0, 12.0, 13.8, 16.0])  # steps 1.7 to 2.3 mm, median 2.0
    phantom, ramp = _irregular_acquisition(tmp_path / "series", offsets)
    read = read_volume(tmp_path / "series")
    assert any("irregular slice spacing (1.700 to 2.300 mm): resampled onto 9 slices 2.000 mm apart" in note
               for note in read.metadata["notes"])
    np.testing.assert_allclose(read.spacing, (*phantom.spacing[:2], 2.0), rtol=1e-6)
    np.testing.assert_allclose(read.origin, phantom.origin, atol=1e-4)
    expected = np.stack([phantom.array[0] + ramp * 2.0 * k for k in range(9)])
    np.testing.assert_allclose(read.array, expected, atol=0.51)  # the stored int16 rounding, nothing else
    with pytest.raises(InputError, match="irregular slice spacing .* --strict-geometry refuses it"):
        read_volume(tmp_path / "series", strict_geometry=True)


def test_a_resampled_series_written_as_dicom_takes_patient_and_study_from_the_first_file(tmp_path):
    _irregular_acquisition(tmp_path / "series", np.array([0.0, 2.2, 4.0, 5.8, 8.0]))
    read = read_volume(tmp_path / "series")
    written = [pydicom.dcmread(p) for p in write_dicom_series(read, tmp_path / "out")]
    first = pydicom.dcmread(read.metadata["dicom_files"][0])
    assert len(written) == read.array.shape[0]
    assert {ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in written} == {first.SOPInstanceUID}
    assert {ds.StudyInstanceUID for ds in written} == {first.StudyInstanceUID}


def test_duplicate_slice_positions_are_detected(dicom_series):
    folder, volume = dicom_series
    same = volume.index_to_world([0, 0, 2])[0]
    _edit(folder, 3, ImagePositionPatient=[f"{v:.6f}" for v in same])
    with pytest.raises(InputError, match="two slices at the same position"):
        read_volume(folder)


def test_a_tilt_tag_with_positions_along_the_normal_keeps_the_geometry_with_a_note(dicom_series):
    folder, volume = dicom_series
    for index in range(6):
        _edit(folder, index, GantryDetectorTilt=12.0)
    read = read_volume(folder)
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.direction, volume.direction, atol=1e-5)
    assert any("GantryDetectorTilt is 12.00 degrees" in note for note in read.metadata["notes"])
    with pytest.raises(InputError, match="gantry tilt of 12.00 degrees and --strict-geometry refuses"):
        read_volume(folder, strict_geometry=True)


def _tilted_acquisition(volume: Volume, folder, tilt_deg: float) -> None:
    """What a tilted gantry records of ``volume``: slices sampled on a sheared stack (each slice's position
    moves along the column axis by tan(tilt) per mm along the normal), written with those positions."""
    step = volume.spacing[2]
    stack = np.array([0.0, np.tan(np.radians(tilt_deg)), 1.0]) * step
    grid = sitk.Image(volume.array.shape[2], volume.array.shape[1], volume.array.shape[0], sitk.sitkFloat32)
    grid.SetSpacing((volume.spacing[0], volume.spacing[1], float(np.linalg.norm(stack))))
    grid.SetOrigin(tuple(volume.origin))
    grid.SetDirection(np.column_stack([[1, 0, 0], [0, 1, 0], stack / np.linalg.norm(stack)]).ravel().tolist())
    sampled = sitk.Resample(volume.to_sitk(), grid, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    write_dicom_series(volume.with_array(np.rint(sitk.GetArrayFromImage(sampled))), folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + np.tan(np.radians(tilt_deg)) * (z - volume.origin[2]), z]
        ds.save_as(path)


def test_a_gantry_tilted_series_is_resampled_onto_an_untilted_grid_matching_the_original(tmp_path):
    phantom = make_phantom((12, 96, 96), seed=4)  # identity direction, 3.75 mm pixels
    original = phantom.with_array(gaussian_filter(phantom.array, (0, 2, 2)))  # smooth: interpolation error small
    _tilted_acquisition(original, tmp_path / "tilted", tilt_deg=15.0)
    read = read_volume(tmp_path / "tilted")
    assert any("gantry-tilted by 15.00 degrees: resampled" in note for note in read.metadata["notes"])
    np.testing.assert_allclose(read.direction, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(read.spacing, original.spacing, rtol=1e-4)
    assert read.array.shape[0] == 12 and read.array.shape[1] > 96  # the sheared slab needs more rows
    # Voxel by voxel against the original at the same scanner coordinates, where both saw anatomy: within
    # interpolation error (measured: median 1.5 HU, 95th percentile 8.6 HU), and 1 mm off is clearly worse.
    def errors(shift_mm: float) -> np.ndarray:
        grid = read.to_sitk()
        grid.SetOrigin(tuple(np.add(grid.GetOrigin(), (0.0, shift_mm, 0.0))))
        truth = sitk.GetArrayFromImage(sitk.Resample(original.to_sitk(), grid, sitk.Transform(), sitk.sitkLinear,
                                                     -1024.0, sitk.sitkFloat32))
        inside = (truth > -900) & (read.array > -900)
        inside[[0, -1]] = False
        assert inside.sum() > 10_000
        return np.abs(read.array - truth)[inside]

    error = errors(0.0)
    assert np.median(error) < 3.0 and np.percentile(error, 95) < 15.0
    assert np.percentile(errors(1.0), 95) > 2 * np.percentile(error, 95)
    with pytest.raises(InputError, match="gantry tilt of 15.00 degrees and --strict-geometry refuses"):
        read_volume(tmp_path / "tilted", strict_geometry=True)


def test_missing_rescale_is_refused_not_assumed(dicom_series):
    folder, _ = dicom_series
    _edit(folder, 1, RescaleIntercept=None)
    with pytest.raises(InputError, match="lacks RescaleIntercept"):
        read_volume(folder)


def _compress(folder, syntax):
    if syntax == JPEG2000Lossless and dicom_write.PYDICOM_MAJOR < 3:
        pytest.skip("pydicom 2.4 cannot encode JPEG 2000 (it decodes it): this test writes one; RLE is tested")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_decodes_to_the_same_hu(dicom_series, syntax):
    folder, volume = dicom_series
    _compress(folder, syntax)
    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_volume(folder).array, volume.array)


def test_undecodable_compression_names_the_syntax_and_what_to_do(dicom_series):
    folder, _ = dicom_series
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    dicom_write.save_dataset(ds, path)
    with pytest.raises(InputError, match="compressed as MPEG2.*convert the series to uncompressed"):
        read_volume(folder)


def test_compressed_syntax_without_its_plugin_says_what_to_install(dicom_series, monkeypatch):
    """Stands in for a machine without pylibjpeg-openjpeg: decoding fails as it would there."""
    folder, _ = dicom_series
    _compress(folder, JPEG2000Lossless)

    def no_plugin(self):
        raise RuntimeError("Unable to decode as there are no pixel data plugins available")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_plugin))
    with pytest.raises(InputError, match="JPEG 2000.*pip install pylibjpeg pylibjpeg-openjpeg"):
        read_volume(folder)


def test_empty_folder_missing_path_and_unknown_file_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM image files"):
        read_volume(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nothing.nrrd")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="give a DICOM series folder or a volume file"):
        read_volume(tmp_path / "notes.txt")


def test_vector_and_4d_volume_files_are_refused(tmp_path):
    vector = sitk.Image([8, 8, 4], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(vector, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="3 components per voxel"):
        read_volume(tmp_path / "rgb.nrrd")
    sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), str(tmp_path / "t.nii"))
    with pytest.raises(InputError, match="is 4-D"):
        read_volume(tmp_path / "t.nii")


def test_pixel_tags_of_the_source_are_not_copied(dicom_series, tmp_path):
    folder, _ = dicom_series
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue
        ds.save_as(path)
    source = read_volume(folder)
    written = write_volume(source, tmp_path / "derived")
    assert all("PixelPaddingValue" not in pydicom.dcmread(p) for p in written)
    assert "PixelPaddingValue" in dicom_write.PIXEL_TAGS


def test_a_real_philips_series_with_an_undecodable_private_tag_is_written_as_a_derived_series(shared_ct, tmp_path):
    # thorax-141 holds (01F1,1026), a DS string under a tag pydicom's private dictionary calls FD
    source = read_volume(shared_ct / "thorax-141")
    first = Volume(source.array[:3].copy(), source.spacing, source.origin, source.direction,
                   {**source.metadata, "dicom_files": source.metadata["dicom_files"][:3]})
    written = [pydicom.dcmread(p) for p in write_dicom_series(first, tmp_path / "out")]
    original = pydicom.dcmread(first.metadata["dicom_files"][0])
    assert len(written) == 3 and written[0].PatientID == original.PatientID
    assert not any(element.tag.is_private for element in written[0])
    np.testing.assert_array_equal(read_volume(tmp_path / "out").array, np.rint(first.array))
