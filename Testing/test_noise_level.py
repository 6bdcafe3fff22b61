"""The noise-adaptive share of the correction: a normal-dose slice keeps its own noise, a noisy one is denoised,
and soft tissue keeps its mean HU."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_generator
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.engine.noise_level import adapted_correction, flat_soft_tissue, local_noise_hu, without_tissue_mean
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel
from LDCTDenoiseLib.simulation import make_phantom


def liver_slice() -> np.ndarray:
    """Air around a 40 HU disc with a bright 'bone' bar: flat soft tissue plus edges."""
    yy, xx = np.mgrid[:128, :128]
    image = np.full((128, 128), -1000.0, dtype=np.float32)
    image[(yy - 64) ** 2 + (xx - 64) ** 2 < 55**2] = 40.0
    image[60:68, 30:98] = 700.0
    return image


def weight_of(hu: np.ndarray, correction: np.ndarray, keep_noise_hu: float) -> float:
    return adapted_correction(hu, correction, keep_noise_hu)[1]


def test_flat_soft_tissue_is_inside_the_body_and_away_from_edges():
    image = liver_slice()
    flat = flat_soft_tissue(image)
    assert flat[40, 64] and flat[90, 64]
    assert not flat[64, 64]  # the bone bar
    assert not flat[56:72, 64].any()  # within a few pixels of the bar's edges
    assert not flat[64, 8]  # air outside the body


def test_a_slice_of_air_has_no_flat_tissue():
    assert not flat_soft_tissue(np.full((64, 64), -1000.0, dtype=np.float32)).any()


@pytest.mark.parametrize("noise_hu, keep_hu", [(30.0, 15.0), (60.0, 12.0), (20.0, 10.0)])
def test_a_network_that_removes_all_the_noise_gets_the_wiener_share_of_its_correction(noise_hu, keep_hu):
    correction = np.random.default_rng(0).normal(0.0, noise_hu, (128, 128)).astype(np.float32)
    weight = weight_of(liver_slice() - correction, correction, keep_hu)  # denoised: the liver slice
    assert weight == pytest.approx(1.0 - keep_hu**2 / noise_hu**2, abs=0.02)


def test_a_network_that_removes_only_part_of_the_noise_gets_a_larger_share_of_its_correction():
    noise = np.random.default_rng(0).normal(0.0, 40.0, (128, 128)).astype(np.float32)
    noisy = liver_slice() + noise  # the input; the network takes away half of each pixel's noise
    wiener = 1.0 - 30.0**2 / 40.0**2
    measured = weight_of(noisy, -0.5 * noise, keep_noise_hu=30.0)  # 9 x 9 windows: sampling spread
    assert measured == pytest.approx(wiener / 0.5, abs=0.06) and measured > wiener + 0.3
    assert weight_of(noisy, -0.5 * noise, keep_noise_hu=12.0) == 1.0  # never more than the whole


def test_an_input_no_noisier_than_the_kept_noise_is_left_as_it_is():
    image = liver_slice()
    correction = np.random.default_rng(0).normal(0.0, 10.0, image.shape).astype(np.float32)
    assert weight_of(image - correction, correction, keep_noise_hu=12.0) == 0.0


def test_without_a_kept_noise_or_without_flat_tissue_the_whole_correction_applies():
    correction = np.random.default_rng(0).normal(0.0, 5.0, (64, 64)).astype(np.float32)
    assert weight_of(liver_slice(), np.ones((128, 128), np.float32), keep_noise_hu=0.0) == 1.0
    assert weight_of(np.full((64, 64), -1000.0, np.float32), correction, keep_noise_hu=12.0) == 1.0


def test_a_correction_that_shifts_soft_tissue_loses_the_shift_but_keeps_its_noise_removal():
    image = liver_slice()
    noise = np.random.default_rng(0).normal(0.0, 30.0, image.shape).astype(np.float32)
    yy, xx = np.mgrid[:128, :128]
    drift = (10.0 + 0.1 * (xx - 64)).astype(np.float32)  # a network biasing the disc by 4 .. 16 HU
    correction = -noise + drift
    kept = without_tissue_mean(image + noise, correction)
    flat = flat_soft_tissue(image)
    assert abs(kept[flat].mean()) < 1.0 and abs(correction[flat].mean()) > 9.0
    assert np.corrcoef(kept[flat], -noise[flat])[0, 1] > 0.95  # the noise removal stays
    region = flat & (xx > 90)
    assert abs((image + noise + kept - image)[region].mean()) < 2.0  # the bias is gone locally, not just on average


def test_the_correction_of_bone_air_and_the_couch_is_left_whole():
    image = liver_slice()
    correction = np.full(image.shape, 25.0, dtype=np.float32)  # e.g. a bone bar sharpened, air made flat
    kept = without_tissue_mean(image, correction)
    assert (kept[image == 700.0] == 25.0).all() and (kept[:, :4] == 25.0).all()
    np.testing.assert_allclose(kept[flat_soft_tissue(image)], 0.0, atol=1e-3)


def test_outside_the_patient_a_correction_beyond_twice_the_inputs_noise_is_cut_to_it():
    noise = np.random.default_rng(0).normal(0.0, 30.0, (128, 128)).astype(np.float32)
    noisy = liver_slice() + noise
    correction = -noise
    correction[124:126, 20:108] += 170.0  # a couch's gap filled in, below the patient
    bounded, _, _ = adapted_correction(noisy, correction, keep_noise_hu=10.0)
    bound = 2.0 * local_noise_hu(noisy, flat_soft_tissue(noisy + correction))
    assert 55.0 < bound < 65.0
    assert bounded[124:126, 20:108].max() == pytest.approx(bound, rel=1e-4)
    inside = liver_slice() > -500.0
    np.testing.assert_array_equal(bounded[inside], without_tissue_mean(noisy, correction)[inside])
    kept = (np.abs(correction) <= bound) & ~inside
    np.testing.assert_array_equal(bounded[kept], correction[kept])  # noise removed in air stays


def test_without_a_kept_noise_the_correction_is_the_networks_own():
    correction = np.random.default_rng(0).normal(0.0, 30.0, (128, 128)).astype(np.float32) + 10.0
    unchanged, weight, _ = adapted_correction(liver_slice() - correction, correction, keep_noise_hu=0.0)
    assert unchanged is correction and weight == 1.0


def model_keeping(keep_hu: float | None) -> LoadedModel:
    manifest = {} if keep_hu is None else {"inference": {"keep_noise_hu": keep_hu}}
    return LoadedModel(tiny_generator(), Normalization(), manifest=manifest, name="tiny")


def test_the_engine_scales_each_slices_correction_by_its_weight_from_the_models_manifest():
    hu = make_phantom((3, 96, 96)).array
    full = VolumeDenoiser(model_keeping(None), EngineOptions(compile="off"))(hu)
    denoiser = VolumeDenoiser(model_keeping(8.0), EngineOptions(compile="off", kernel="standard"))  # x1
    out = denoiser(hu)
    for k in range(hu.shape[0]):
        correction, weight, _ = adapted_correction(hu[k], full[k] - hu[k], 8.0)
        np.testing.assert_allclose(out[k] - hu[k], weight * correction, atol=1e-2)
    low, high = denoiser.last_run["applied_percent"]
    assert 0.0 <= low <= high <= 100.0 and denoiser.last_run["keep_noise_hu"] == 8.0
    assert denoiser.header["LDCTDenoise_keep_noise_hu"] == "8"
    assert denoiser.description == "denoised 100%, keep 8 HU (LDCTDenoise)"


def test_the_option_overrides_the_models_value_and_zero_applies_the_whole_correction():
    hu = make_phantom((2, 96, 96)).array
    full = VolumeDenoiser(model_keeping(None), EngineOptions(compile="off"))(hu)
    out = VolumeDenoiser(model_keeping(500.0), EngineOptions(compile="off", keep_noise_hu=0.0))(hu)
    np.testing.assert_allclose(out, full, atol=1e-3)


@pytest.mark.parametrize("keep_hu", [-1.0, 101.0])
def test_a_kept_noise_outside_0_to_100_hu_is_refused(keep_hu):
    with pytest.raises(InputError, match="keep-noise must be between 0 and 100 HU"):
        EngineOptions(keep_noise_hu=keep_hu)


def test_the_run_summary_says_when_the_rule_left_most_slices_untouched_and_how_to_denoise_further():
    from LDCTDenoiseLib.engine.noise_level import applied_summary

    quiet = {"keep_noise_hu": 20.0, "applied_percent": [0.0, 100.0], "applied_median_percent": 0.0,
             "input_noise_hu": 13.2}
    assert applied_summary(quiet) == (", keep 20 HU: 0-100 % applied. Little was changed: its noise measures 13 HU in "
                                      "flat soft tissue, near the 20 HU kept; to denoise further set keep noise lower "
                                      "(--keep-noise 0 takes the network's whole correction)")
    noisy = {**quiet, "applied_percent": [40.0, 100.0], "applied_median_percent": 85.0}
    assert applied_summary(noisy) == ", keep 20 HU: 40-100 % applied"
    assert applied_summary({**quiet, "keep_noise_hu": 0.0}) == ""


def test_the_run_summary_names_the_kernel_and_after_a_sharp_one_how_to_take_it_as_standard():
    from LDCTDenoiseLib.engine.noise_level import applied_summary

    sharp = {"keep_noise_hu": 100.0, "applied_percent": [0.0, 10.0], "applied_median_percent": 0.0,
             "input_noise_hu": 60.0, "kernel": "sharp kernel (noise: neighbouring pixels' noise correlates 0.05)"}
    text = applied_summary(sharp)
    assert text.startswith(", keep 100 HU for a sharp kernel (noise: neighbouring pixels' noise correlates 0.05): "
                           "0-10 % applied. Little was changed")
    assert text.endswith("or the kernel to standard (--kernel standard) if the series is not a sharp-kernel one")
    standard = {**sharp, "kernel": "standard kernel (header: ConvolutionKernel B30f)"}
    assert "--kernel standard" not in applied_summary(standard)
