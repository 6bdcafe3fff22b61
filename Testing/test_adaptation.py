"""Adapting a model to the scan: neighbouring slices as noisy targets, the mismatch mask, the guards
(overlap, correlated noise, too few slices, no gain), reproducibility, cancel, and the saved model."""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from LDCTDenoiseLib import cli
from LDCTDenoiseLib.engine import neighbours, onnx_runtime
from LDCTDenoiseLib.engine.adaptation import adapt
from LDCTDenoiseLib.engine.inference import CancelToken
from LDCTDenoiseLib.engine.neighbours import (
    MASK_HU,
    NeighbourTrainer,
    detail_transfer,
    filtered,
    matched,
    mismatch_threshold,
    neighbour_loss,
    neighbour_offset,
    noise_correlation,
    prepare_series,
    shared_bands,
    split_slices,
    target_and_mask,
)
from LDCTDenoiseLib.engine.options import EngineOptions
from LDCTDenoiseLib.errors import Cancelled, InputError
from LDCTDenoiseLib.io import Volume, read_volume, write_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import WEIGHTS_NAME, load_model, sha256_of
from LDCTDenoiseLib.resources import resources_dirs
from LDCTDenoiseLib.simulation import make_phantom

RESOURCES = resources_dirs()[0]


def noisy_phantom(slices: int = 14, size: int = 96, noise_hu: float = 40.0, correlated: bool = False,
                  seed: int = 0) -> Volume:
    """A phantom series with independent noise per slice, or (``correlated``) noise shared by neighbours."""
    clean = make_phantom((slices, size, size), seed=seed)
    rng = np.random.default_rng(seed + 1)
    noise = rng.normal(0, noise_hu, (slices + 1, size, size)).astype(np.float32)
    if correlated:  # an overlapping reconstruction: each slice averages two independent ones
        noise = (noise[:-1] + noise[1:]) / np.sqrt(2)
    return clean.with_array(clean.array + noise[:slices])


def test_the_mask_leaves_out_pixels_where_the_anatomy_changes_between_slices():
    rng = np.random.default_rng(0)
    a = np.full((64, 64), 40.0, np.float32) + rng.normal(0, 30, (64, 64)).astype(np.float32)
    b = np.full((64, 64), 40.0, np.float32) + rng.normal(0, 30, (64, 64)).astype(np.float32)
    b[20:40, 20:40] += 300.0  # a vessel or bone edge that is in one slice only
    mask = matched(a, b)
    assert not mask[25:35, 25:35].any()
    assert mask[:10].mean() > 0.99  # same anatomy, independent 30 HU noise: kept


def test_the_mask_is_drawn_from_the_two_neighbours_never_from_the_source_s_own_noise():
    volume = noisy_phantom(slices=12, size=96, noise_hu=150.0)
    series = prepare_series(volume.array, 2.0, None, Normalization(), [])
    pair = series.pairs[0]
    window = (slice(None), slice(None))
    _, mask = target_and_mask(series, pair, window)
    series.hu[pair[0]] += np.random.default_rng(9).normal(0, 150, series.hu[pair[0]].shape).astype(np.float32)
    np.testing.assert_array_equal(target_and_mask(series, pair, window)[1], mask)
    # over the kept pixels the target's noise is unrelated to the source's: nothing teaches the network to keep noise
    clean = make_phantom((12, 96, 96), seed=0).array
    source_noise = volume.array[pair[0]] - clean[pair[0]]
    target_noise = (volume.array[pair[1][0]] + volume.array[pair[1][1]]) / 2 - clean[pair[0]]
    assert abs(np.corrcoef(source_noise[mask], target_noise[mask])[0, 1]) < 0.05


def test_the_mismatch_threshold_grows_with_the_noise_so_noise_alone_leaves_few_pixels_out():
    assert mismatch_threshold(noisy_phantom(noise_hu=10.0).array, 1) == MASK_HU
    loud = noisy_phantom(noise_hu=300.0)
    threshold = mismatch_threshold(loud.array, 1)
    assert threshold > 2 * MASK_HU
    flat = np.full((64, 64), 40.0, np.float32)
    rng = np.random.default_rng(3)
    before, after = (flat + rng.normal(0, 300, flat.shape).astype(np.float32) for _ in range(2))
    assert matched(before, after, threshold).mean() > 0.98


class _StandInBase(torch.nn.Module):
    """A stand-in base model (named as such) whose whole correction is a given pattern."""

    def __init__(self, correction: torch.Tensor | float) -> None:
        super().__init__()
        self.correction = correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.correction


def test_the_target_keeps_the_base_model_s_low_frequency_correction_and_the_neighbours_fine_detail(tiny_model_dir):
    series = prepare_series(noisy_phantom(slices=16).array, 2.0, None, Normalization(), [])

    def held_out_target(base: torch.nn.Module | None) -> np.ndarray:
        return NeighbourTrainer(load_model(tiny_model_dir).generator, [series], 0, base=base).validation[0][1]

    raw = held_out_target(None)
    np.testing.assert_allclose(raw, target_and_mask(series, series.held_out[0], (slice(None), slice(None)))[0])
    # an offset both neighbours share (as photon starvation's bias) is what the base removes: it stays removed
    np.testing.assert_allclose(held_out_target(_StandInBase(-0.05)), raw - 0.05, atol=1e-5)
    # a pixel-scale correction (the texture adaptation is for) is left to the neighbours
    checkerboard = 0.05 * (-1.0) ** torch.arange(96)[:, None] * (-1.0) ** torch.arange(96)[None, :]
    inside = (slice(8, -8), slice(8, -8))  # the low-pass filter reflects at the slice's border
    np.testing.assert_allclose(held_out_target(_StandInBase(checkerboard))[inside], raw[inside], atol=2e-4)


def textured_stack(fine_correlation: float, slices: int = 9, size: int = 128, noise_hu: float = 30.0) -> np.ndarray:
    """Slices of one coarse anatomy with fine texture whose slice-to-slice correlation is ``fine_correlation``
    (an AR(1) process along z), plus independent noise: 2-5 mm slices of real anatomy look like this."""
    rng = np.random.default_rng(3)
    coarse = ndimage.gaussian_filter(rng.normal(0, 400, (size, size)), 8)
    fine = [rng.normal(0, 60, (size, size))]
    for _ in range(slices - 1):
        fresh = rng.normal(0, 60, (size, size))
        fine.append(fine_correlation * fine[-1] + np.sqrt(1 - fine_correlation ** 2) * fresh)
    fine = ndimage.gaussian_filter(np.stack(fine), (0, 1, 1))
    return (coarse + fine + rng.normal(0, noise_hu, (slices, size, size))).astype(np.float32)


def transfer_of(stack: np.ndarray) -> np.ndarray:
    pairs = [(i, (i - 1, i + 1)) for i in range(1, stack.shape[0] - 1)]
    return detail_transfer(lambda i: stack[i], pairs, lambda pair: np.ones(stack.shape[1:], bool))


def test_the_detail_transfer_is_one_where_neighbours_share_the_detail_and_falls_where_it_changes():
    """On the base model's outputs (little noise left): texture that changes from slice to slice is shown
    by the neighbours' mean in proportion to its slice-to-slice correlation; noise left lowers the
    transfer (the trainer then keeps more of the base model), never raises it."""
    shared, changing = transfer_of(textured_stack(1.0, noise_hu=3.0)), transfer_of(textured_stack(0.5, noise_hu=3.0))
    fine = slice(8, 24)  # about 0.09-0.27 cycles per pixel: the texture's band
    assert shared[fine].min() > 0.9
    assert 0.35 < changing[fine].mean() < 0.6
    assert changing[0] == 1.0 and np.all(np.diff(changing) <= 0)
    noisy = transfer_of(textured_stack(1.0, noise_hu=30.0))
    assert np.all(noisy <= shared + 0.02) and noisy[fine].mean() < shared[fine].mean() - 0.1


def test_filtered_multiplies_each_frequency_by_its_transfer():
    images = torch.randn(2, 1, 64, 64)
    assert torch.allclose(filtered(images, np.ones(neighbours.TRANSFER_BINS)), images, atol=1e-5)
    lowpass = (np.arange(neighbours.TRANSFER_BINS) < 4).astype(float)
    smooth = filtered(images, lowpass)
    assert smooth.std() < 0.2 * images.std()
    assert torch.allclose(smooth.mean((-2, -1)), images.mean((-2, -1)), atol=1e-5)  # the mean (DC) passes


def test_the_neighbour_target_teaches_only_the_shared_bands_and_the_base_model_holds_the_rest():
    transfer = np.linspace(1.0, 0.0, neighbours.TRANSFER_BINS)
    bands = shared_bands(transfer)
    assert np.all(bands[transfer >= 0.9] == 1) and np.all(bands[transfer <= 0.7] == 0)
    torch.manual_seed(0)
    output, anchor, target = torch.randn(3, 2, 1, 48, 48)
    mask = (torch.rand(2, 1, 48, 48) > 0.3).float()
    nothing, everything = [np.zeros(neighbours.TRANSFER_BINS)] * 2, [np.ones(neighbours.TRANSFER_BINS)] * 2
    assert neighbour_loss(anchor, target, mask, anchor, nothing) == 0  # no shared band: the base model's output
    unshared = neighbour_loss(output, target, mask, anchor, nothing)
    assert unshared == neighbour_loss(output, -target, mask, anchor, nothing)  # the target plays no part
    inner = torch.zeros_like(mask)
    inner[..., 8:-8, 8:-8] = 1
    masked = ((output - target) ** 2 * mask * inner).sum() / (mask * inner).sum()
    assert torch.isclose(neighbour_loss(output, target, mask, anchor, everything), masked, rtol=1e-4)


def test_overlapping_slices_in_the_header_take_neighbours_one_thickness_apart():
    notes = []
    assert neighbour_offset(noisy_phantom().array, 1.25, 2.5, notes) == 2
    assert "slices overlap (thickness 2.5 mm, spacing 1.25 mm)" in notes[0]


def test_measurably_correlated_neighbour_noise_moves_to_the_next_slice():
    correlated = noisy_phantom(correlated=True).array
    assert noise_correlation(correlated, 1) > 0.4 and abs(noise_correlation(correlated, 2)) < 0.1
    notes = []
    assert neighbour_offset(correlated, 2.5, None, notes) == 2
    assert "correlated" in notes[0]
    assert abs(noise_correlation(noisy_phantom().array, 1)) < 0.1


def test_too_few_slices_skip_adaptation_and_keep_the_model(tiny_model_dir):
    model = load_model(tiny_model_dir)
    result = adapt(model, noisy_phantom(slices=5), EngineOptions(adapt_steps=5))
    assert result.model is model and not result.adapted
    assert "too few training and held-out pairs" in result.summary["notes"][-1]


def test_held_out_slices_and_their_neighbours_never_enter_training():
    train, held_out = split_slices(40, 2)
    assert 1 <= len(held_out) <= 3
    for centre in held_out:
        assert not {centre - 2, centre - 1, centre, centre + 1, centre + 2} & set(train)


def test_adaptation_lowers_the_held_out_loss_and_leaves_the_given_model_unchanged(tiny_model_dir):
    model = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    result = adapt(model, noisy_phantom(), EngineOptions(adapt_steps=120))
    assert result.adapted and result.model is not model
    summary = result.summary
    assert summary["validation_loss_best"] < summary["validation_loss_before"] and summary["best_step"] > 0
    assert all(np.array_equal(before[k], v) for k, v in model.generator.state_dict().items())
    assert result.model.manifest["adaptation"]["adapted_from"] == "tiny"
    assert "sha256" not in result.model.manifest  # new weights: the base model's checksum is not theirs
    assert onnx_runtime.graph_path(result.model).parent.name.startswith(f"process-{os.getpid()}-")  # gone at exit


def test_no_gain_on_the_held_out_slices_falls_back_to_the_unadapted_model(tiny_model_dir, monkeypatch):
    losses = iter(np.linspace(1.0, 2.0, 100))  # every validation worse than the one before training
    monkeypatch.setattr(NeighbourTrainer, "validation_loss", lambda self: float(next(losses)))
    model = load_model(tiny_model_dir)
    result = adapt(model, noisy_phantom(), EngineOptions(adapt_steps=200))
    assert result.model is model and not result.adapted
    assert result.summary["stopped_early"]
    assert result.summary["steps"] == neighbours.VALIDATE_EVERY * neighbours.PATIENCE
    assert "did not lower the held-out" in result.summary["notes"][-1]


def test_a_seed_reproduces_the_adapted_weights(tiny_model_dir):
    model = load_model(tiny_model_dir)
    volume = noisy_phantom()

    def weights(seed: int) -> dict:
        series = prepare_series(volume.array, 2.0, None, model.normalization, [])
        trainer = NeighbourTrainer(copy.deepcopy(model.generator), [series], seed)
        trainer.fit(max_steps=5)
        return trainer.network.state_dict()

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


def test_cancelling_during_adaptation_raises_and_writes_nothing(tiny_model_dir):
    token = CancelToken()

    def progress(stage, done, total):
        token.cancel()

    with pytest.raises(Cancelled, match="adaptation cancelled"):
        adapt(load_model(tiny_model_dir), noisy_phantom(), EngineOptions(adapt_steps=50), progress, token)


def test_the_options_refuse_a_bad_budget_and_save_adapted_needs_one(tmp_path, tiny_model_dir):
    with pytest.raises(InputError, match="--adapt must be between 0 and"):
        EngineOptions(adapt_minutes=-1)
    with pytest.raises(InputError, match="--adapt-steps must be >= 1"):
        EngineOptions.from_argv(["--adapt-steps", "0"])
    source = tmp_path / "in.nrrd"
    write_volume(noisy_phantom(slices=4, size=32), source)
    code = cli.main(["denoise", str(source), str(tmp_path / "out.nrrd"), "--model", str(tiny_model_dir),
                     "--save-adapted", str(tmp_path / "adapted"), "--quiet"])
    assert code == 1 and not (tmp_path / "out.nrrd").exists() and not (tmp_path / "adapted").exists()


def test_save_adapted_gives_a_model_that_reproduces_the_run_and_names_no_patient(tmp_path, tiny_model_dir, capsys):
    source = tmp_path / "patient-DOE^JOHN.nrrd"
    write_volume(noisy_phantom(), source)
    shipped = sha256_of(tiny_model_dir / WEIGHTS_NAME)
    common = ["--quiet", "--json", "--runtime", "torch", "--device", "cpu"]
    assert cli.main(["denoise", str(source), str(tmp_path / "adapted-run.nrrd"), "--model", str(tiny_model_dir),
                     "--adapt-steps", "120", "--save-adapted", str(tmp_path / "adapted"), *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["adaptation"]["adapted"] and summary["saved_adapted"] == str(tmp_path / "adapted")
    assert sha256_of(tiny_model_dir / WEIGHTS_NAME) == shipped  # the model it started from is never written
    assert cli.main(["denoise", str(source), str(tmp_path / "reloaded.nrrd"), "--model", str(tmp_path / "adapted"),
                     *common]) == 0
    capsys.readouterr()
    first, second = read_volume(tmp_path / "adapted-run.nrrd").array, read_volume(tmp_path / "reloaded.nrrd").array
    np.testing.assert_allclose(first, second, atol=1e-3)
    manifest_text = (tmp_path / "adapted" / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["provenance"]["adaptation"]["adapted_from"] == "tiny"
    assert manifest["provenance"]["adaptation"]["steps"] <= 120
    assert "DOE" not in manifest_text and str(tmp_path) not in manifest_text


def test_the_bundled_model_file_is_unchanged_by_adapting():
    bundled_model_dir = RESOURCES / "Models" / "default"
    before = sha256_of(bundled_model_dir / WEIGHTS_NAME)
    result = adapt(load_model(bundled_model_dir), noisy_phantom(slices=12, size=64), EngineOptions(adapt_steps=2))
    assert result.summary["steps"] == 2
    assert sha256_of(bundled_model_dir / WEIGHTS_NAME) == before


def test_cancelling_a_background_run_while_it_adapts_leaves_no_output_and_no_process(tiny_model_dir):
    from LDCTDenoiseLib.slicer.process import CANCELLED, BackgroundDenoise

    run = BackgroundDenoise(noisy_phantom(slices=20), EngineOptions(device="cpu", adapt_minutes=5),
                            weights=str(tiny_model_dir))
    deadline = time.monotonic() + 120
    while run.stage != "adapting" and time.monotonic() < deadline and run.poll() == "running":
        time.sleep(0.1)
    assert run.stage == "adapting"
    run.cancel()
    assert run.poll() == CANCELLED and not run.folder.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(run.process.pid, 0)  # the whole group is gone
