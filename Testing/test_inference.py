"""The volume engine: batch-independent, input untouched, progress, cancel, OOM back-off."""

import numpy as np
import pytest
import torch

from conftest import tiny_generator
from LDCTDenoiseLib.engine.inference import CancelToken, EngineOptions, VolumeDenoiser, denoise_volume, resolve_device
from LDCTDenoiseLib.errors import Cancelled, InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel, load_model
from LDCTDenoiseLib.simulation import make_phantom


@pytest.fixture
def model() -> LoadedModel:
    return LoadedModel(tiny_generator(), Normalization(), manifest={}, name="tiny")


@pytest.fixture
def hu() -> np.ndarray:
    return make_phantom((7, 48, 40)).array


def test_result_does_not_depend_on_batch_size(model, hu):
    results = [denoise_volume(hu, model, EngineOptions(batch_size=b, compile="off")) for b in (1, 3, 7)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-3)


def test_result_is_the_generator_applied_to_normalised_slices(model, hu):
    out = denoise_volume(hu, model, EngineOptions(compile="off", channels_last=False))
    x = torch.from_numpy(model.normalization.to_network(hu)).unsqueeze(1)
    with torch.no_grad():
        expected = model.normalization.to_hu(model.generator(x).squeeze(1).numpy())
    np.testing.assert_allclose(out, expected, atol=2e-2)
    assert np.abs(out - hu).mean() > 1.0  # the tiny random model does change the image


def test_input_is_never_modified_and_output_is_a_new_float32_array(model, hu):
    before = hu.copy()
    hu.flags.writeable = False
    out = denoise_volume(hu, model, EngineOptions(compile="off"))
    np.testing.assert_array_equal(hu, before)
    assert out.dtype == np.float32 and out.shape == hu.shape and not np.shares_memory(out, hu)


def test_integer_input_is_accepted(model, hu):
    out = denoise_volume(hu.astype(np.int16), model, EngineOptions(compile="off"))
    assert out.dtype == np.float32


def test_hu_outside_the_clip_range_keep_their_value_plus_the_correction(model, hu):
    hu = hu.copy()
    hu[3, 20, 20] = 6000.0  # metal, above the 3072 HU clip
    out = denoise_volume(hu, model, EngineOptions(compile="off"))
    assert out[3, 20, 20] > 5000.0


def test_noise_below_the_networks_floor_is_taken_away_and_padding_stays(model, hu):
    at_floor, under_floor = hu.copy(), hu.copy()
    at_floor[3, 5, 5], under_floor[3, 5, 5] = -1024.0, -1060.0  # noise in air, under the -1024 HU floor
    at_floor[3, 0, 0] = under_floor[3, 0, 0] = -3024.0  # padding outside the reconstruction circle
    options = EngineOptions(compile="off")
    out_at, out_under = denoise_volume(at_floor, model, options), denoise_volume(under_floor, model, options)
    assert out_under[3, 5, 5] == pytest.approx(out_at[3, 5, 5], abs=1e-3)  # the network sees both as -1024
    assert out_under[3, 0, 0] < -2500.0


def test_the_floor_lift_raises_noise_under_the_floor_only():
    lift = Normalization().floor_lift(np.array([-3024.0, -1500.0, -1060.0, -1024.0, -1000.0, 40.0, 5000.0]))
    np.testing.assert_array_equal(lift, [0.0, 476.0, 36.0, 0.0, 0.0, 0.0, 0.0])


def test_progress_reports_every_batch_up_to_all_slices(model, hu):
    calls = []
    denoise_volume(hu, model, EngineOptions(batch_size=3, compile="off"), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_cancel_between_batches_raises_and_returns_nothing(model, hu):
    token = CancelToken()

    def cancel_after_first(done, total):
        token.cancel()

    with pytest.raises(Cancelled, match="nothing was written"):
        denoise_volume(hu, model, EngineOptions(batch_size=2, compile="off"), progress=cancel_after_first, cancel=token)


class OutOfMemoryAbove:
    """Stand-in for a GPU that runs out of memory above ``limit`` slices (no GPU here)."""

    def __init__(self, network, limit):
        self.network, self.limit, self.sizes = network, limit, []

    def __call__(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.network(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(model, hu):
    reference = denoise_volume(hu, model, EngineOptions(batch_size=1, compile="off", runtime="torch"))
    denoiser = VolumeDenoiser(model, EngineOptions(batch_size=8, compile="off", runtime="torch"))
    flaky = OutOfMemoryAbove(denoiser.network, limit=2)
    denoiser._forward_for = lambda slices: flaky
    out = denoiser(hu)
    np.testing.assert_allclose(out, reference, atol=1e-3)
    assert flaky.sizes[:3] == [8, 4, 2] and denoiser.last_run["batch_size"] == 2


def test_out_of_memory_with_one_slice_is_reported(model, hu):
    denoiser = VolumeDenoiser(model, EngineOptions(batch_size=1, compile="off", runtime="torch"))
    denoiser._forward_for = lambda slices: OutOfMemoryAbove(denoiser.network, limit=0)
    with pytest.raises(torch.OutOfMemoryError, match="with a single slice"):
        denoiser(hu)


def test_compiled_model_gives_the_eager_result_for_a_ragged_last_batch(model, hu):
    eager = denoise_volume(hu, model, EngineOptions(batch_size=3, compile="off"))
    denoiser = VolumeDenoiser(model, EngineOptions(batch_size=3, compile="on"))
    out = denoiser(hu)
    assert denoiser.last_run["compiled"] is True
    np.testing.assert_allclose(out, eager, atol=5e-2)


def test_bf16_changes_hu_by_a_small_fraction_of_the_correction(model, hu):
    fp32 = denoise_volume(hu, model, EngineOptions(compile="off"))
    bf16 = denoise_volume(hu, model, EngineOptions(compile="off", precision="bf16"))
    correction = np.abs(fp32 - hu).mean()
    assert np.abs(bf16 - fp32).mean() < 0.05 * correction


def test_nan_input_and_wrong_dimensions_are_refused(model, hu):
    bad = hu.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        denoise_volume(bad, model)
    with pytest.raises(InputError, match="slices, rows, columns"):
        denoise_volume(hu[0], model)


def test_devices_resolve_and_absent_ones_are_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cuda", "mps", "cpu"}
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="sees no CUDA GPU; use --device cpu"):
            resolve_device("cuda")


def test_bad_engine_options_are_refused(model):
    with pytest.raises(InputError, match="precision"):
        EngineOptions(precision="int8")
    with pytest.raises(InputError, match="batch size"):
        EngineOptions(batch_size=0)
    with pytest.raises(InputError, match="fp16 is not supported on CPU"):
        VolumeDenoiser(model, EngineOptions(device="cpu", precision="fp16"))


def test_saved_and_loaded_model_denoises_like_the_original(tiny_model_dir, hu):
    loaded = load_model(tiny_model_dir)
    original = LoadedModel(tiny_generator(), Normalization(), manifest={})
    np.testing.assert_allclose(
        denoise_volume(hu, loaded, EngineOptions(compile="off")),
        denoise_volume(hu, original, EngineOptions(compile="off")),
        atol=1e-3,
    )


@pytest.mark.parametrize("strength", [0.0, 0.25, 0.5, 1.0])
def test_strength_scales_the_networks_correction(model, hu, strength):
    full = denoise_volume(hu, model, EngineOptions(compile="off"))
    denoiser = VolumeDenoiser(model, EngineOptions(compile="off", strength=strength))
    out = denoiser(hu)
    np.testing.assert_allclose(out - hu, strength * (full - hu), atol=1e-3)
    assert denoiser.last_run["strength_percent"] == 100 * strength
    assert denoiser.description == f"denoised {100 * strength:g}% (LDCTDenoise)"
    assert denoiser.header == {"LDCTDenoise_model": "tiny", "LDCTDenoise_strength_percent": f"{100 * strength:g}",
                               "LDCTDenoise_keep_noise_hu": "0", "LDCTDenoise_self_ensemble": "1"}


def test_strength_zero_returns_the_input_exactly(model, hu):
    np.testing.assert_array_equal(denoise_volume(hu, model, EngineOptions(compile="off", strength=0.0)), hu)


@pytest.mark.parametrize("strength", [-0.01, 1.5])
def test_strength_outside_0_to_100_percent_is_refused(strength):
    with pytest.raises(InputError, match="strength must be between 0 and 100 %"):
        EngineOptions(strength=strength)


@pytest.mark.parametrize("fails_at", ["compile", "first call"])
def test_a_failing_torch_compile_falls_back_to_eager_with_a_warning(model, hu, monkeypatch, caplog, fails_at):
    def broken_compiled(*args, **kwargs):
        raise RuntimeError("InductorError: C++ compile error\nlong compiler log")

    def broken_compile(network, **kwargs):
        if fails_at == "compile":
            raise RuntimeError("Dynamo is not supported on this Python")
        return broken_compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = denoise_volume(hu, model, EngineOptions(compile="off"))
    denoiser = VolumeDenoiser(model, EngineOptions(batch_size=3, compile="on"))
    with caplog.at_level("WARNING", logger="LDCTDenoiseLib.engine.inference"):
        out = denoiser(hu)
    np.testing.assert_allclose(out, eager, atol=1e-3)  # batches of 3 against 1: float rounding only
    assert denoiser.last_run["compiled"] is False
    assert "torch.compile failed (RuntimeError:" in caplog.text and "running without it" in caplog.text
