"""Scanner-realistic noise: each parameter changes what it should, and draws are reproducible."""

import numpy as np
import pytest
import torch

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.simulation.scanner import (
    FILTERS,
    Scan,
    ScannerNoise,
    ScannerRanges,
    SliceProjection,
    scanner_noise_hu,
)

SIZE, PIXEL_MM = 128, 1.5


def _grid():
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    return y * PIXEL_MM, x * PIXEL_MM


def _water_cylinder(radius_mm=80.0):
    y, x = _grid()
    return np.where(x**2 + y**2 < radius_mm**2, 0.0, -1000.0).astype(np.float32)


def _shoulders():
    """A wide ellipse (63 x 25 pixels half-axes) with dense bone at both ends: a long lateral path."""
    y, x = _grid()
    body = (x / 95.0) ** 2 + (y / 37.5) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0)
    for side in (-1, 1):
        hu[((x - side * 70.0) / 14.0) ** 2 + (y / 14.0) ** 2 < 1] = 1500.0
    return hu.astype(np.float32)


def _centre(noise, half=16):
    c = SIZE // 2
    return noise[c - half : c + half, c - half : c + half]


def test_filtered_back_projection_reconstructs_a_disc_in_attenuation_units():
    projection = SliceProjection.of(_water_cylinder(), PIXEL_MM)
    scan = Scan.of(projection, ScannerNoise(views=360), PIXEL_MM)
    u = scan.detector
    exact = 2 * 0.0192 * torch.sqrt((80.0**2 - u**2).clamp_min(0))  # water disc, radius 80 mm
    centre = np.array([-3.0, 0.0, 3.0])
    image = scan.backproject(scan.filtered(exact[None].expand(len(scan.angles), -1).contiguous()), centre, centre)
    assert image.mean() == pytest.approx(0.0192, rel=0.01)
    assert float((scan.line_integrals[0] - exact).abs().max()) < 0.1 * float(exact.max())  # coarse 2 mm projection


@pytest.mark.parametrize("target", [10.0, 40.0])
@pytest.mark.parametrize("name", ["ramp", "hann"])
def test_added_noise_at_the_body_centre_is_what_was_asked(target, name):
    settings = ScannerNoise(added_noise_hu=target, filter=name, views=360, electronic_std=5.0)
    noise = _centre(scanner_noise_hu(_water_cylinder(), PIXEL_MM, settings, np.random.default_rng(0)))
    assert noise.std() == pytest.approx(target, rel=0.15)
    assert abs(noise.mean()) < 0.1 * target + 1.0  # no CT-number shift


def test_variance_scales_with_the_square_of_the_added_noise():
    stds = [
        _centre(scanner_noise_hu(_water_cylinder(), PIXEL_MM, ScannerNoise(added_noise_hu=t, views=360,
                                                                           electronic_std=0.0),
                                 np.random.default_rng(1))).std()
        for t in (10.0, 20.0, 40.0)
    ]
    assert stds[1] / stds[0] == pytest.approx(2.0, rel=0.1) and stds[2] / stds[0] == pytest.approx(4.0, rel=0.1)


def _mean_frequency(noise: np.ndarray) -> float:
    """The power-weighted mean radial frequency of a noise patch (cycles per pixel)."""
    power = np.abs(np.fft.fft2(noise - noise.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(noise.shape[0]), np.fft.fftfreq(noise.shape[1]), indexing="ij")
    return float((power * np.hypot(fx, fy)).sum() / power.sum())


def test_a_smoother_filter_moves_the_noise_power_spectrum_to_lower_frequencies():
    means = {}
    for name, cutoff in (("ramp", 1.0), ("shepp-logan", 1.0), ("hann", 1.0), ("hann", 0.5)):
        settings = ScannerNoise(added_noise_hu=40.0, filter=name, cutoff=cutoff, views=720, electronic_std=0.0)
        means[name, cutoff] = _mean_frequency(
            _centre(scanner_noise_hu(_water_cylinder(), PIXEL_MM, settings, np.random.default_rng(2)), 24)
        )
    order = [("ramp", 1.0), ("shepp-logan", 1.0), ("hann", 1.0), ("hann", 0.5)]
    assert [means[k] for k in order] == sorted((means[k] for k in order), reverse=True)
    assert means["ramp", 1.0] > 1.3 * means["hann", 0.5]


def _horizontal_streakiness(noise: np.ndarray) -> float:
    """Variance of the row means over the variance of single pixels: high for streaks along rows."""
    return float(noise.mean(axis=1).var() / noise.var())


def test_photon_starvation_makes_streaks_along_the_longest_path_and_modulation_reduces_them():
    hu = _shoulders()
    body = slice(SIZE // 2 - 12, SIZE // 2 + 12), slice(SIZE // 2 - 30, SIZE // 2 + 30)

    def streakiness(modulation: float) -> float:
        settings = ScannerNoise(added_noise_hu=60.0, views=360, electronic_std=30.0, bowtie=0.0,
                                modulation=modulation, filter="ramp")
        noise = scanner_noise_hu(hu, PIXEL_MM * 2, settings, np.random.default_rng(3))  # a 380 x 150 mm body
        return _horizontal_streakiness(noise[body])

    constant, modulated = streakiness(0.0), streakiness(1.0)
    assert constant > 2 * modulated  # streaks along the lateral path; modulation raises the flux there
    settings = ScannerNoise(added_noise_hu=60.0, views=360, electronic_std=30.0, bowtie=0.0, modulation=0.0)
    turned = scanner_noise_hu(np.ascontiguousarray(hu.T), PIXEL_MM * 2, settings, np.random.default_rng(3)).T
    assert _horizontal_streakiness(turned[body]) > 2 * modulated  # the streaks turn with the anatomy


def test_a_bowtie_lowers_the_flux_toward_the_detector_edges_and_raises_the_noise_of_an_arm():
    pixel_mm = 3.0
    y, x = (axis * pixel_mm / PIXEL_MM for axis in _grid())
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[x**2 + y**2 < 80.0**2] = 0.0  # the body
    hu[(x - 160.0) ** 2 + y**2 < 20.0**2] = 0.0  # an arm 160 mm from the isocentre
    projection = SliceProjection.of(hu, pixel_mm)

    def arm_over_centre(bowtie: float) -> float:
        """Predicted noise variance at the arm over that at the centre (what the draws follow)."""
        scan = Scan.of(projection, ScannerNoise(bowtie=bowtie, modulation=0.0, electronic_std=0.0), pixel_mm)
        ray_variance = torch.exp(scan.line_integrals) / scan.flux
        return scan._variance_at(ray_variance, (0.0, 160.0)) / scan._variance_at(ray_variance, (0.0, 0.0))

    assert arm_over_centre(3.0) > 1.2 * arm_over_centre(0.0)
    scan = Scan.of(projection, ScannerNoise(bowtie=3.0, modulation=0.0), pixel_mm)
    edge = int((scan.detector - 250.0).abs().argmin())
    assert float(scan.flux[0, edge] / scan.flux[0, len(scan.detector) // 2]) == pytest.approx(np.exp(-3.0), rel=0.05)


def test_draws_are_reproducible_and_a_region_is_the_same_as_the_whole_slice_there():
    hu = _water_cylinder()
    settings = ScannerNoise(added_noise_hu=30.0, views=200)
    whole = scanner_noise_hu(hu, PIXEL_MM, settings, np.random.default_rng(5))
    again = scanner_noise_hu(hu, PIXEL_MM, settings, np.random.default_rng(5))
    region = scanner_noise_hu(hu, PIXEL_MM, settings, np.random.default_rng(5), region=(10, 20, 32, 48))
    other = scanner_noise_hu(hu, PIXEL_MM, settings, np.random.default_rng(6))
    np.testing.assert_array_equal(whole, again)
    np.testing.assert_allclose(region, whole[10:42, 20:68], atol=1e-3)
    assert not np.allclose(whole, other)


def test_ranges_draw_every_parameter_inside_its_documented_range():
    ranges = ScannerRanges()
    draws = [ranges.draw(np.random.default_rng(seed)) for seed in range(200)]
    for name in ("added_noise_hu", "cutoff", "views", "detector_mm", "electronic_std", "bowtie", "modulation"):
        low, high = getattr(ranges, name)
        values = [getattr(d, name) for d in draws]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.5 * (high - low)
    assert {d.filter for d in draws} == set(FILTERS)
    assert ranges.draw(np.random.default_rng(9)) == ranges.draw(np.random.default_rng(9))
    assert ScannerRanges.from_dict({"added_noise_hu": [5, 20]}).added_noise_hu == (5, 20)


def test_bad_settings_are_refused_with_what_is_wrong():
    with pytest.raises(InputError, match="filter must be one of"):
        ScannerNoise(filter="sharp")
    with pytest.raises(InputError, match="views"):
        ScannerNoise(views=4)
    with pytest.raises(InputError, match="unknown scanner range"):
        ScannerRanges.from_dict({"dose": [1, 2]})
    with pytest.raises(InputError, match="pixel size"):
        scanner_noise_hu(_water_cylinder(), float("nan"), ScannerNoise(), np.random.default_rng(0))
    with pytest.raises(InputError, match="region"):
        scanner_noise_hu(_water_cylinder(), PIXEL_MM, ScannerNoise(), np.random.default_rng(0), region=(120, 0, 32, 8))


def test_no_noise_is_added_outside_the_reconstruction_circle_of_a_padded_slice():
    hu = _water_cylinder()
    padded = hu.copy()
    y, x = _grid()
    padded[np.hypot(x, y) > SIZE / 2 * PIXEL_MM] = -2048.0  # the scanner's padding outside the circle
    settings = ScannerNoise(added_noise_hu=30.0, views=200)
    noise = scanner_noise_hu(padded, PIXEL_MM, settings, np.random.default_rng(0))
    assert not noise[padded == -2048.0].any() and noise[padded > -2048.0].std() > 5.0
    unpadded = scanner_noise_hu(hu, PIXEL_MM, settings, np.random.default_rng(0))
    assert unpadded[0, 0] != 0.0  # air at -1000 in the corners is inside the field of view


def test_noise_at_two_doses_of_one_scanner_has_each_asked_level_and_is_independent():
    projection = SliceProjection.of(_water_cylinder(), PIXEL_MM)
    settings = ScannerNoise(added_noise_hu=40.0, filter="hann", cutoff=0.8, views=360, electronic_std=5.0)
    grid = (np.arange(SIZE) - (SIZE - 1) / 2) * PIXEL_MM
    low, normal = projection.noise_at_levels_hu(settings, (40.0, 12.0), np.random.default_rng(4), grid, grid, PIXEL_MM)
    assert _centre(low).std() == pytest.approx(40.0, rel=0.15)
    assert _centre(normal).std() == pytest.approx(12.0, rel=0.15)
    assert abs(np.corrcoef(_centre(low, 36).ravel(), _centre(normal, 36).ravel())[0, 1]) < 0.1  # most of the disc
    alone = projection.noise_at_levels_hu(settings, (40.0, 0.0), np.random.default_rng(4), grid, grid, PIXEL_MM)
    assert not alone[1].any()
    assert np.array_equal(alone[0], scanner_noise_hu(_water_cylinder(), PIXEL_MM, settings, np.random.default_rng(4)))


def test_a_second_dose_keeps_the_rest_of_the_recipe():
    projection = SliceProjection.of(_water_cylinder(), PIXEL_MM)
    scan = Scan.of(projection, ScannerNoise(added_noise_hu=40.0, views=360), PIXEL_MM)
    quieter = scan.at_dose(ScannerNoise(added_noise_hu=20.0, views=360), projection.body_centre_mm)
    assert float((quieter.flux / scan.flux).mean()) == pytest.approx(4.0, rel=0.1)  # 1/4 of the variance
    with pytest.raises(ValueError, match="dose only"):
        scan.at_dose(ScannerNoise(added_noise_hu=20.0, views=720), projection.body_centre_mm)
