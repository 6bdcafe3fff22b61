"""Metrics in a region against the NDCT: scikit-image as the oracle, windows stated, paired t-tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from LDCTDenoiseLib.compare.comparison import compare_in_region
from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE, psnr, slice_metrics, ssim
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.simulation import make_phantom


def _skimage(image, reference, window, full=False):
    x, y = window.clip(image), window.clip(reference)
    return structural_similarity(x, y, data_range=window.data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, full=full)


def _real_slices(shared_ct_path):
    from LDCTDenoiseLib.io import read_volume

    clean = read_volume(shared_ct_path / "lidc-idri" / "LIDC-IDRI-0001").array[6:9]
    return clean, clean + np.random.default_rng(0).normal(0, 30, clean.shape).astype(np.float32)


@pytest.mark.parametrize("window", [SOFT_TISSUE, FULL_RANGE], ids=["soft", "full"])
def test_whole_slice_metrics_equal_scikit_image_on_real_ct(shared_ct, window):
    clean, noisy = _real_slices(shared_ct)
    mask = np.ones(clean.shape[1:], bool)
    for k in range(clean.shape[0]):
        ours = slice_metrics(noisy[k], clean[k], window, mask)
        assert ours["ssim"] == pytest.approx(_skimage(noisy[k], clean[k], window), abs=1e-3)
        x, y = window.clip(clean[k]), window.clip(noisy[k])
        oracle_psnr = peak_signal_noise_ratio(x, y, data_range=window.data_range)
        assert ours["psnr"] == pytest.approx(oracle_psnr, abs=1e-3)
        assert ours["ssim"] == pytest.approx(ssim(noisy[k], clean[k], window), abs=1e-9)
        assert ours["psnr"] == pytest.approx(psnr(noisy[k], clean[k], window), abs=1e-9)


def test_region_ssim_is_the_mean_of_scikit_images_ssim_map_over_the_region():
    phantom = make_phantom((1, 128, 128), seed=2).array[0]
    noisy = phantom + np.random.default_rng(1).normal(0, 20, phantom.shape)
    mask = np.zeros(phantom.shape, bool)
    mask[40:80, 2:60] = True  # reaches the border: those pixels are left out, as scikit-image does
    _, local = _skimage(noisy, phantom, SOFT_TISSUE, full=True)
    interior = np.zeros_like(mask)
    interior[5:-5, 5:-5] = True
    ours = slice_metrics(noisy, phantom, SOFT_TISSUE, mask)
    assert ours["ssim"] == pytest.approx(local[mask & interior].mean(), abs=1e-3)
    x, y = SOFT_TISSUE.clip(noisy)[mask], SOFT_TISSUE.clip(phantom)[mask]
    assert ours["rmse_hu"] == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))
    assert ours["nrmse"] == pytest.approx(ours["rmse_hu"] / 400)


def test_compare_in_region_reports_per_slice_means_and_paired_t_tests():
    clean = make_phantom((6, 64, 64), seed=0).array
    rng = np.random.default_rng(0)
    volumes = {"LDCT": clean + rng.normal(0, 40, clean.shape), "Denoised": clean + rng.normal(0, 10, clean.shape)}
    mask = np.zeros(clean.shape, bool)
    mask[1:5, 20:44, 20:44] = True
    result = compare_in_region(volumes, clean, mask)
    assert {r["slice"] for r in result["slices"]} == {1, 2, 3, 4}
    means = {(m["window"].split(" [")[0], m["method"]): m for m in result["means"]}
    assert set(means) == {(w, m) for w in ("soft tissue W400/L40", "full range") for m in ("LDCT", "Denoised")}
    assert means[("soft tissue W400/L40", "Denoised")]["psnr"] > means[("soft tissue W400/L40", "LDCT")]["psnr"]
    assert all(m["data_range"] in (400.0, 4096.0) for m in result["means"])
    (test,) = [t for t in result["t_tests"] if t["window"].startswith("soft")]
    per_slice = {m: [r["psnr"] for r in result["slices"] if r["method"] == m and r["window"].startswith("soft")]
                 for m in ("LDCT", "Denoised")}
    assert test["psnr_p"] == pytest.approx(stats.ttest_rel(per_slice["LDCT"], per_slice["Denoised"]).pvalue)
    assert test["psnr_p"] < 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [("nan", "NaN"), ("shape", "resample/register"), ("empty", "empty"), ("border", "farther than 5 pixels")],
)
def test_bad_inputs_are_clear_errors(change, message):
    clean = make_phantom((2, 32, 32)).array
    volume, mask = clean.copy(), np.ones(clean.shape, bool)
    if change == "nan":
        volume[0, 3, 3] = np.nan
    elif change == "shape":
        volume = volume[:, :30]
    elif change == "empty":
        mask[:] = False
    else:
        mask[:] = False
        mask[:, 0:3, :] = True
    with pytest.raises(InputError, match=message):
        compare_in_region({"LDCT": volume}, clean, mask)
