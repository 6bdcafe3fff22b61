"""HU densities: scipy's gaussian_kde as the oracle, one bandwidth and one grid per plot, summaries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import trapezoid
from scipy.stats import gaussian_kde, norm

from LDCTDenoiseLib.compare.density import full_width_half_maximum, hu_densities
from LDCTDenoiseLib.errors import InputError


def _samples(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"NDCT": rng.normal(50, 10, 4000), "LDCT": rng.normal(52, 30, 4000), "Denoised": rng.normal(50, 14, 4000)}


def test_default_bandwidth_is_scotts_rule_of_the_reference_as_scipy_computes_it():
    samples = _samples()
    densities = hu_densities(samples, reference="NDCT")
    scipy_kernel_std = float(np.sqrt(gaussian_kde(samples["NDCT"]).covariance[0, 0]))
    assert densities.bandwidth_hu == pytest.approx(scipy_kernel_std, rel=1e-9)


def test_every_curve_is_a_kde_with_the_shared_bandwidth_on_the_shared_grid():
    samples = _samples()
    densities = hu_densities(samples, reference="NDCT")
    grid, h = densities.curves[0].hu, densities.bandwidth_hu
    for curve in densities.curves:
        assert curve.hu is grid
        by_hand = norm.pdf(grid[:, None], loc=samples[curve.name][None, :], scale=h).mean(axis=1)
        np.testing.assert_allclose(curve.density, by_hand, rtol=1e-6, atol=1e-12)
        assert trapezoid(curve.density, grid) == pytest.approx(1.0, abs=1e-3)


def test_real_ct_region_matches_scipy_within_1e_3(shared_ct):
    from LDCTDenoiseLib.io import read_volume

    hu = read_volume(shared_ct / "lidc-idri" / "LIDC-IDRI-0001").array[8, 200:300, 200:300]
    noisy = hu + np.random.default_rng(0).normal(0, 25, hu.shape)
    densities = hu_densities({"NDCT": hu, "LDCT": noisy}, reference="NDCT", max_samples=100_000)
    assert len(densities.curves) == 2
    for curve, values in zip(densities.curves, (hu, noisy)):
        oracle = gaussian_kde(values.ravel(), bw_method=densities.bandwidth_hu / values.std(ddof=1))(curve.hu)
        assert np.max(np.abs(curve.density - oracle)) <= 1e-3 * oracle.max()


def test_summaries_of_a_normal_sample():
    rng = np.random.default_rng(1)
    densities = hu_densities({"a": rng.normal(40, 20, 20000)}, bandwidth_hu=5.0)
    curve = densities.curves[0]
    assert curve.mean == pytest.approx(40, abs=0.5) and curve.std == pytest.approx(20, abs=0.5)
    assert curve.mode == pytest.approx(40, abs=3)
    assert curve.fwhm == pytest.approx(2 * np.sqrt(2 * np.log(2)) * np.hypot(20, 5), rel=0.05)
    assert curve.js_divergence is None


def test_fwhm_of_a_sampled_gaussian_curve():
    grid = np.linspace(-100, 100, 2001)
    assert full_width_half_maximum(grid, norm.pdf(grid, 10, 15)) == pytest.approx(2.3548 * 15, rel=1e-3)


def test_jensen_shannon_is_zero_for_the_reference_and_grows_with_the_difference():
    densities = hu_densities(_samples(), reference="NDCT")
    divergence = {c.name: c.js_divergence for c in densities.curves}
    assert divergence["NDCT"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < divergence["Denoised"] < divergence["LDCT"] < 1
    apart = hu_densities({"a": np.random.default_rng(0).normal(-500, 5, 500),
                          "b": np.random.default_rng(1).normal(500, 5, 500)}, reference="a", bandwidth_hu=5.0)
    assert apart.curves[1].js_divergence == pytest.approx(1.0, abs=1e-3)


def test_large_regions_are_subsampled_reproducibly():
    values = {"NDCT": np.random.default_rng(0).normal(0, 10, 300_000)}
    first = hu_densities(values, max_samples=5000, seed=3)
    again = hu_densities(values, max_samples=5000, seed=3)
    assert first.curves[0].samples == 5000
    np.testing.assert_array_equal(first.curves[0].density, again.curves[0].density)


@pytest.mark.parametrize(
    ("values", "message"),
    [({"a": np.array([1.0])}, "at least 2 voxels"), ({"a": np.array([1.0, np.nan])}, "NaN"),
     ({"a": np.full(10, 3.0)}, "all equal"), ({}, "no volumes")],
)
def test_bad_samples_are_errors(values, message):
    with pytest.raises(InputError, match=message):
        hu_densities(values, bandwidth_hu=1.0 if values else None)


def test_unknown_reference_is_an_error():
    with pytest.raises(InputError, match="reference 'NDCT'"):
        hu_densities({"a": np.arange(10.0)}, reference="NDCT")


def test_a_constant_reference_says_the_region_has_no_distribution_not_a_bandwidth():
    values = {"NDCT": np.full(500, -1024.0), "LDCT": np.random.default_rng(0).normal(-1024, 20, 500)}
    with pytest.raises(InputError, match="NDCT is -1024 HU at every voxel of the region.*inside the anatomy"):
        hu_densities(values, reference="NDCT")
    with pytest.raises(InputError, match="bandwidth must be > 0 HU; got 0"):
        hu_densities(values, reference="NDCT", bandwidth_hu=0.0)
