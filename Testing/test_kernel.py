"""The noise a normal-dose scan keeps follows its reconstruction kernel: the header's ConvolutionKernel where
its name is known, else the noise's texture; an explicit keep-noise or kernel choice wins."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from conftest import add_volume_node, small_volume, tiny_generator
from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE, psnr
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.engine.kernel import KEEP_FACTOR, kind_of_kernel_name, noise_lag1, series_kernel
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import read_volume, write_dicom_series
from LDCTDenoiseLib.io.handoff import read_handoff, write_handoff
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel, find_model
from LDCTDenoiseLib.simulation.scanner import ScannerNoise, scanner_noise_hu
from LDCTDenoiseLib.slicer.mrml_bridge import volume_from_node


@pytest.mark.parametrize(("name", "kind"), [
    ("LUNG", "sharp"), ("BONEPLUS", "sharp"), ("STANDARD", "standard"), ("SOFT", "smooth"),  # GE
    ("B10f", "smooth"), ("B30f", "standard"), ("Br40d", "standard"), ("B70f", "sharp"), ("I26f", "standard"),
    ("L", "sharp"), ("B", "standard"), ("YC", "sharp"), ("A", "smooth"),  # Philips
    ("FC13", "standard"), ("FC52", "sharp"),  # Canon / Toshiba
])
def test_known_kernel_names_have_a_kind(name, kind):
    assert kind_of_kernel_name(name) == kind


@pytest.mark.parametrize("name", [None, "", "FC40", "UB", "my kernel"])
def test_an_unknown_kernel_name_has_no_kind(name):
    assert kind_of_kernel_name(name) is None


def tissue_with_noise(noise: np.ndarray) -> np.ndarray:
    """A 40 HU disc in air with ``noise`` inside: flat soft tissue whose texture is the noise's."""
    rows, columns = noise.shape[-2:]
    yy, xx = np.mgrid[:rows, :columns]
    disc = (yy - rows / 2) ** 2 + (xx - columns / 2) ** 2 < (0.45 * rows) ** 2
    return np.where(disc, 40.0 + noise, -1000.0).astype(np.float32)


def white_and_smooth_noise(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    white = np.random.default_rng(seed).normal(0.0, 20.0, (3, 160, 160))
    smooth = ndimage.gaussian_filter(white, (0, 1.2, 1.2))
    return white, smooth * (20.0 / smooth.std())


def test_without_a_header_name_a_sharp_kernels_uncorrelated_noise_shows_it():
    white, smooth = white_and_smooth_noise()
    assert noise_lag1(tissue_with_noise(white)) < 0.05 < 0.5 < noise_lag1(tissue_with_noise(smooth))
    sharp = series_kernel(tissue_with_noise(white))
    assert (sharp.kind, sharp.source) == ("sharp", "noise")
    assert series_kernel(tissue_with_noise(smooth)).kind == "standard"
    nothing_flat = series_kernel(np.full((2, 64, 64), -1000.0, dtype=np.float32))
    assert nothing_flat.kind == "standard" and "too little flat soft tissue" in nothing_flat.detail


def test_the_option_wins_over_the_header_and_the_header_over_the_noise():
    white, _ = white_and_smooth_noise()
    hu = tissue_with_noise(white)
    assert series_kernel(hu, "auto", "B30f") == ("standard", "header", "ConvolutionKernel B30f")
    assert series_kernel(hu, "smooth", "LUNG").kind == "smooth"
    assert series_kernel(hu, "auto", "an unknown name").source == "noise"


def model_keeping(keep_hu: float) -> LoadedModel:
    return LoadedModel(tiny_generator(), Normalization(), manifest={"inference": {"keep_noise_hu": keep_hu}},
                       name="tiny")


def test_the_engine_keeps_the_models_noise_times_the_kernels_factor_and_says_which_kernel():
    _, smooth = white_and_smooth_noise()
    hu = tissue_with_noise(smooth)
    denoiser = VolumeDenoiser(model_keeping(20.0), EngineOptions(compile="off"))
    denoiser(hu, header_kernel="LUNG")
    assert denoiser.keep_noise_hu == 20.0 * KEEP_FACTOR["sharp"] == 100.0
    assert denoiser.last_run["kernel"] == "sharp kernel (header: ConvolutionKernel LUNG)"
    assert denoiser.header["LDCTDenoise_keep_noise_hu"] == "100"
    denoiser(hu, header_kernel="B10f")
    assert denoiser.keep_noise_hu == 15.0
    denoiser(hu)
    assert denoiser.keep_noise_hu == 20.0 and denoiser.last_run["kernel"].startswith("standard kernel (noise:")


def test_an_explicit_keep_noise_is_kept_whatever_the_kernel_and_zero_is_maximum_denoising():
    _, smooth = white_and_smooth_noise()
    hu = tissue_with_noise(smooth)
    for keep in (0.0, 33.0):
        denoiser = VolumeDenoiser(model_keeping(20.0), EngineOptions(compile="off", keep_noise_hu=keep))
        denoiser(hu, header_kernel="LUNG")
        assert denoiser.keep_noise_hu == keep and denoiser.last_run["kernel"] is None
    whole = VolumeDenoiser(model_keeping(0.0), EngineOptions(compile="off"))
    np.testing.assert_allclose(whole(hu, header_kernel="LUNG"), denoiser_output(hu, 0.0), atol=1e-3)


def denoiser_output(hu: np.ndarray, keep: float) -> np.ndarray:
    return VolumeDenoiser(model_keeping(20.0), EngineOptions(compile="off", keep_noise_hu=keep))(hu)


def test_an_unknown_kernel_choice_is_refused():
    with pytest.raises(InputError, match="kernel must be one of"):
        EngineOptions(kernel="lung")


def test_the_reader_the_hand_off_and_the_mrml_bridge_carry_the_headers_kernel(tmp_path, scene):
    volume = small_volume()
    write_dicom_series(volume, tmp_path / "series")
    files = sorted((tmp_path / "series").iterdir())
    for path in files:
        header = pydicom.dcmread(path)
        header.ConvolutionKernel = ["Br40d", "3"]  # Siemens: the kernel, then its strength
        header.save_as(path)
    read = read_volume(tmp_path / "series")
    assert read.metadata["convolution_kernel"] == "Br40d"
    assert read_handoff(write_handoff(read, tmp_path / "run.npy")).metadata["convolution_kernel"] == "Br40d"

    node = add_volume_node(scene, volume)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(pydicom.dcmread(p).SOPInstanceUID for p in files))
    database = {pydicom.dcmread(p).SOPInstanceUID: str(p) for p in files}  # Slicer's dicomDatabase.fileForInstance
    assert volume_from_node(node, lambda uid: database.get(uid, "")).metadata["convolution_kernel"] == "Br40d"
    assert volume_from_node(node, lambda uid: "").metadata["convolution_kernel"] is None
    assert volume_from_node(node).metadata["convolution_kernel"] is None


def test_a_sharp_kernel_slice_near_normal_dose_is_no_longer_smoothed_past_its_input(shared_ct):
    """The held-out Philips L slice (normal-dose flat noise about 74 HU) with 10 HU added, bundled model."""
    try:
        model = find_model(None)
    except InputError as error:
        pytest.skip(str(error))
    series = read_volume(shared_ct / "lung-pet-ct-dx" / "Lung_Dx-A0001" / "kernel-L")
    ndct = series.array[8:9]
    settings = ScannerNoise(added_noise_hu=10.0, filter="ramp", cutoff=1.0, views=984)
    ldct = ndct + scanner_noise_hu(ndct[0], series.spacing[0], settings, np.random.default_rng(0))[None]
    kernel = series.metadata["convolution_kernel"]
    following = VolumeDenoiser(model, EngineOptions(device="cpu", precision="fp32"))(ldct, header_kernel=kernel)
    as_standard = VolumeDenoiser(model, EngineOptions(device="cpu", precision="fp32", kernel="standard"))(ldct)
    before = psnr(ldct[0], ndct[0], SOFT_TISSUE)
    assert psnr(following[0], ndct[0], SOFT_TISSUE) >= before - 0.1
    assert psnr(as_standard[0], ndct[0], SOFT_TISSUE) < before - 5.0


def test_a_dicom_folders_kernel_is_read_from_its_first_header(tmp_path):
    from LDCTDenoiseLib.io.dicom_read import folder_kernel

    write_dicom_series(small_volume(), tmp_path / "series")
    for path in (tmp_path / "series").iterdir():
        header = pydicom.dcmread(path)
        header.ConvolutionKernel = "LUNG"
        header.save_as(path)
    assert folder_kernel(tmp_path / "series") == "LUNG"
    assert folder_kernel(tmp_path / "series" / "missing.nrrd") is None
