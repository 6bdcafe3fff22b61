"""Phantom and low-dose simulation: plausible HU, reproducible, noise that scales with dose."""

import numpy as np
import pytest

from LDCTDenoiseLib.errors import Cancelled, InputError
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.simulation import (
    ProjectionNoise,
    add_gaussian_noise,
    make_phantom,
    projection_noise_hu,
    simulate_low_dose,
)


def test_phantom_has_air_lung_soft_tissue_and_bone_in_hu():
    volume = make_phantom((8, 128, 128))
    hu = volume.array
    assert hu.shape == (8, 128, 128) and volume.spacing == (360 / 128, 360 / 128, 2.5)
    assert np.median(hu[:, 0, :]) == pytest.approx(-1000, abs=5)  # air at the edge
    assert np.percentile(hu[0], 5) < -700  # lungs in the top slice
    assert (hu > 500).sum() > 0  # cortical bone
    centre = hu[:, 40:90, 40:90]
    assert ((centre > -150) & (centre < 200)).mean() > 0.2  # soft tissue


def test_phantom_is_reproducible_and_seeded():
    a, b, c = (make_phantom((4, 64, 64), seed=s).array for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_noise_has_the_asked_standard_deviation_and_leaves_the_input():
    hu = np.zeros((4, 64, 64), dtype=np.float32)
    noisy = add_gaussian_noise(hu, 25.0, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(25.0, rel=0.03) and abs(noisy.mean()) < 1.0
    assert not hu.any()
    with pytest.raises(InputError):
        add_gaussian_noise(hu, -1.0, np.random.default_rng(0))


def _water_cylinder(size=128, pixel_mm=1.5):
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return np.where(x**2 + y**2 < (0.4 * size) ** 2, 0.0, -1000.0).astype(np.float32), pixel_mm


def test_projection_noise_is_unbiased_and_grows_as_dose_falls():
    hu, pixel_mm = _water_cylinder()
    inside = slice(44, 84)
    stds = {}
    for dose in (0.5, 0.25, 0.1):
        settings = ProjectionNoise(dose_fraction=dose, views=180)
        noise = projection_noise_hu(hu, pixel_mm, settings, np.random.default_rng(1))
        centre = noise[inside, inside]
        assert abs(centre.mean()) < 0.15 * centre.std()
        stds[dose] = centre.std()
    # inserted variance scales as (1 - a) / a: 1, 3 and 9 for a = 0.5, 0.25, 0.1
    assert stds[0.25] / stds[0.5] == pytest.approx(np.sqrt(3), rel=0.15)
    assert stds[0.1] / stds[0.5] == pytest.approx(3.0, rel=0.15)


def test_projection_noise_is_reproducible_for_a_seed():
    hu, pixel_mm = _water_cylinder(64)
    settings = ProjectionNoise(views=90)
    a = projection_noise_hu(hu, pixel_mm, settings, np.random.default_rng(7))
    b = projection_noise_hu(hu, pixel_mm, settings, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_simulated_volume_keeps_geometry_and_records_its_recipe():
    volume = make_phantom((3, 64, 64))
    volume.origin = (1.0, 2.0, 3.0)
    before = volume.array.copy()
    calls = []
    low = simulate_low_dose(volume, ProjectionNoise(views=60), seed=4, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(volume.array, before)
    assert low.spacing == volume.spacing and low.origin == volume.origin
    assert low.metadata["simulation"]["seed"] == 4 and low.metadata["simulation"]["dose_fraction"] == 0.25
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert np.std(low.array - volume.array) > 5.0


def test_simulation_can_be_cancelled():
    volume = make_phantom((3, 32, 32))
    with pytest.raises(Cancelled):
        simulate_low_dose(volume, ProjectionNoise(views=30), should_stop=lambda: True)


def test_bad_simulation_settings_are_refused():
    with pytest.raises(InputError, match="dose fraction"):
        ProjectionNoise(dose_fraction=1.5)
    volume = Volume(np.zeros((1, 8, 8), np.float32), spacing=(0.5, 0.7, 1.0))
    with pytest.raises(InputError, match="square pixels"):
        simulate_low_dose(volume)
