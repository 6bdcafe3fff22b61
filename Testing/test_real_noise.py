"""Real-noise texture: from neighbouring slices where anatomy agrees, drawn at any size, training subjects only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import tiny_training_config
from LDCTDenoiseLib.io import Volume, write_volume
from training.real_noise import MAX_LAG, TextureMix, difference_autocorrelation, textures
from training.sampling import SlicePair
from training.trainer import Trainer

SIGMA_PX = 1.0  # white noise smoothed so: lag-1 autocorrelation exp(-1 / (4 sigma^2))


def _noisy_tissue(slices: int = 8, size: int = 96, noise_hu: float = 20.0, seed: int = 0) -> np.ndarray:
    """Soft tissue with one shared structure and independent, Gaussian-textured noise on each slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    anatomy = np.where(np.hypot(yy - size / 2, xx - size / 2) < size / 6, 60.0, 20.0)
    noise = np.stack([ndimage.gaussian_filter(rng.standard_normal((size, size)), SIGMA_PX) for _ in range(slices)])
    return (anatomy + noise * noise_hu / noise.std()).astype(np.float32)


def test_the_texture_of_independent_neighbours_is_recovered_where_anatomy_agrees():
    autocorrelation, pixels = difference_autocorrelation(_noisy_tissue(), offset=1)
    normalised = autocorrelation / autocorrelation[MAX_LAG, MAX_LAG]
    assert np.sqrt(autocorrelation[MAX_LAG, MAX_LAG]) == pytest.approx(20.0, rel=0.1)
    assert normalised[MAX_LAG, MAX_LAG + 1] == pytest.approx(np.exp(-1 / (4 * SIGMA_PX**2)), abs=0.05)
    assert pixels > 0.5 * 7 * 96 * 96


def test_noise_drawn_with_a_texture_has_its_autocorrelation_at_any_size():
    (texture,) = textures([SlicePair(_noisy_tissue(), name="train-a")], [])
    for size in (64, 200):
        drawn = texture.draw(np.random.default_rng(1), size)
        assert drawn.shape == (size, size) and drawn.std() == pytest.approx(1.0, rel=0.1)
        lag_one = np.mean(drawn[:, 1:] * drawn[:, :-1]) / drawn.var()
        assert lag_one == pytest.approx(texture.autocorrelation[MAX_LAG, MAX_LAG + 1], abs=0.06)


def test_a_series_with_correlated_neighbours_gives_no_texture_and_says_why():
    overlapping = _noisy_tissue(slices=12)
    overlapping = (overlapping[:-1] + overlapping[1:]) / 2  # two neighbours averaged: their noise shared
    notes: list[str] = []
    found = textures([SlicePair(overlapping[:3], name="short")], notes)
    assert not found and "short skipped" in notes[0]


def test_mixing_keeps_the_simulated_noise_level_where_it_is_and_respects_its_probability():
    (texture,) = textures([SlicePair(_noisy_tissue(), name="train-a")], [])
    simulated = np.random.default_rng(2).standard_normal((128, 128)).astype(np.float32)
    simulated[:, 64:] *= 4  # a noisier half, as behind a shoulder
    never, share = TextureMix([texture], 0.0)(np.random.default_rng(3), simulated)
    assert never is simulated and share == 0.0
    mixed, share = TextureMix([texture], 1.0, share=(1.0, 1.0))(np.random.default_rng(3), simulated)
    assert share == 1.0
    assert mixed[:, 8:56].std() == pytest.approx(1.0, rel=0.2) and mixed[:, 72:120].std() == pytest.approx(4.0, rel=0.2)
    lag_one = np.mean(mixed[:, 1:56] * mixed[:, :55]) / mixed[:, :56].var()
    assert lag_one > 0.5  # the real texture's correlation, not the simulated white noise's 0


def test_textures_come_from_the_training_subjects_alone(tmp_path, capsys):
    for index, split in enumerate(("train", "validation", "test")):
        write_volume(Volume(_noisy_tissue(seed=index), spacing=(0.8, 0.8, 2.0)), tmp_path / f"{split}-{index}.nrrd")
    manifest = tmp_path / "patients.csv"
    manifest.write_text("patient,ndct,split\n" + "".join(f"{s}-{i},{s}-{i}.nrrd,{s}\n" for i, s in
                                                         enumerate(("train", "validation", "test"))))
    config = tiny_training_config(manifest, tmp_path / "cache", "noise.kind=scanner", "noise.real_texture=1.0",
                                  "noise.scanner={added_noise_hu: [10, 40], views: [64, 96]}",
                                  "schedule.validate=false", "schedule.epochs=1")
    Trainer(config, tmp_path / "run", quiet=False).train()
    printed = capsys.readouterr().out
    assert "real-noise textures of train-0" in printed
    assert "validation-1" not in printed and "test-2" not in printed
    samples = (tmp_path / "run" / "samples.csv").read_text().splitlines()
    assert samples[0].endswith("real_texture") and all(float(row.split(",")[-1]) > 0 for row in samples[1:])
