"""The CPU fast paths: OpenVINO (the default) and ONNX Runtime run the generator's exported correction as torch
does."""

import logging

import numpy as np
import pytest
import torch

from conftest import tiny_generator
from LDCTDenoiseLib.compare.roi import body_mask
from LDCTDenoiseLib.engine import onnx_runtime, openvino_runtime
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser, denoise_volume
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel, load_model
from LDCTDenoiseLib.networks import architecture
from LDCTDenoiseLib.resources import resources_dirs
from LDCTDenoiseLib.simulation import ScannerNoise, make_phantom, scanner_noise_hu

pytestmark = pytest.mark.skipif(not onnx_runtime.available(), reason="onnxruntime and onnx are not installed")
TORCH = EngineOptions(device="cpu", compile="off", runtime="torch")
ONNX = EngineOptions(device="cpu", compile="off", runtime="onnxruntime")


@pytest.fixture
def model() -> LoadedModel:
    return LoadedModel(tiny_generator(), Normalization(), manifest={}, name="tiny")


@pytest.mark.parametrize("shape", [(3, 48, 40), (2, 37, 51)])  # odd sizes: padded by replication as torch does
def test_onnx_runtime_gives_the_torch_result_on_any_slice_size(model, shape):
    hu = make_phantom((shape[0], 64, 64)).array[:, : shape[1], : shape[2]]
    denoiser = VolumeDenoiser(model, ONNX)
    out = denoiser(hu)
    assert denoiser.last_run["runtime"] == "onnxruntime"
    np.testing.assert_allclose(out, denoise_volume(hu, model, TORCH), atol=0.05)  # HU


def test_auto_takes_openvino_then_onnx_runtime_for_fp32_on_the_cpu_and_torch_otherwise(model, monkeypatch, caplog):
    if openvino_runtime.available():
        assert VolumeDenoiser(model, EngineOptions(device="cpu", compile="off")).runtime == "openvino"
        assert VolumeDenoiser(model, EngineOptions(device="cpu", precision="fp32")).precision == "fp32"
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    with caplog.at_level(logging.INFO):
        assert VolumeDenoiser(model, EngineOptions(device="cpu", compile="off")).runtime == "onnxruntime"
    assert "OpenVINO is not installed" in caplog.text
    assert VolumeDenoiser(model, EngineOptions(device="cpu", precision="bf16")).runtime == "torch"
    assert VolumeDenoiser(model, EngineOptions(device="cpu", compile="on")).runtime == "torch"
    with pytest.raises(InputError, match="runs fp32 on the CPU"):
        VolumeDenoiser(model, EngineOptions(device="cpu", precision="bf16", runtime="onnxruntime"))


def test_without_either_runtime_auto_runs_torch_with_a_note_and_asking_for_one_is_an_error(model, monkeypatch,
                                                                                           caplog):
    monkeypatch.setattr(onnx_runtime, "available", lambda: False)
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    with caplog.at_level(logging.INFO):
        denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))
    assert denoiser.runtime == "torch" and "ONNX Runtime is not installed" in caplog.text
    with pytest.raises(InputError, match="pip install onnxruntime onnx"):
        VolumeDenoiser(model, ONNX)


def test_a_corrupted_cached_graph_fails_its_checksum_and_is_rebuilt(model, caplog):
    hu = make_phantom((2, 32, 32)).array
    first = VolumeDenoiser(model, ONNX)(hu)
    path = onnx_runtime.graph_path(model)
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        again = VolumeDenoiser(model, ONNX)(hu)
    assert "fails its checksum" in caplog.text
    np.testing.assert_array_equal(again, first)
    assert onnx_runtime.sha256_of(path) == path.with_suffix(".sha256").read_text().strip()


def test_a_failing_export_in_auto_falls_back_through_each_runtime_to_torch_with_warnings(model, model_cache,
                                                                                         monkeypatch, caplog):
    def broken(model, path, part="correction"):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_runtime, "export_graph", broken)
    with caplog.at_level(logging.WARNING):
        denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))
    assert denoiser.runtime == "torch" and "exporter broke" in caplog.text
    if openvino_runtime.available():
        assert "OpenVINO could not run this model" in caplog.text and "ONNX Runtime could not" in caplog.text


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_bundled_model_in_fp32_on_two_real_slices_within_a_hundredth_of_a_hu(shared_ct, runtime):
    bundled = [f / "Models" / "default" for f in resources_dirs() if (f / "Models" / "default").is_dir()]
    if not bundled:
        pytest.skip("no model bundled")
    if runtime == "openvino" and not openvino_runtime.available():
        pytest.skip("openvino is not installed")
    model = load_model(bundled[0])
    ndct, low = _two_real_noisy_slices(shared_ct)
    graph = VolumeDenoiser(model, EngineOptions(device="cpu", runtime=runtime, precision="fp32"))
    difference = np.abs(graph(low) - VolumeDenoiser(model, TORCH)(low))[body_mask(ndct)]
    assert np.percentile(difference, 99) < 0.01 and difference.max() < 0.1  # measured: see benchmarks/RESULTS.md


@pytest.mark.skipif(not openvino_runtime.available(), reason="openvino is not installed")
@pytest.mark.parametrize("shape", [(3, 48, 40), (2, 37, 51)])
def test_openvino_runs_the_same_graph_as_torch_on_any_slice_size(model, shape):
    hu = make_phantom((shape[0], 64, 64)).array[:, : shape[1], : shape[2]]
    denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off", runtime="openvino"))
    out = denoiser(hu)
    assert denoiser.last_run["runtime"] == "openvino" and len(denoiser.onnx.compiled) == 1  # one size, one compile
    np.testing.assert_allclose(out, denoise_volume(hu, model, TORCH), atol=0.05)  # HU


def test_asking_for_openvino_without_it_is_an_error_that_says_what_to_install(model, monkeypatch):
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    with pytest.raises(InputError, match="pip install openvino"):
        VolumeDenoiser(model, EngineOptions(device="cpu", runtime="openvino"))


def test_the_generators_three_levels_chain_to_its_correction(model):
    x = torch.from_numpy(make_phantom((1, 32, 32)).array[:, None] / 4096 + 0.25).float()
    generator = model.generator.eval()
    with torch.no_grad():
        first = generator.first_level(x)
        torch.testing.assert_close(generator.last_level(generator.inner_levels(first), first), generator.residual(x))


requires_openvino = pytest.mark.skipif(not openvino_runtime.available(), reason="openvino is not installed")


@requires_openvino
def test_where_the_cpu_has_no_native_bf16_auto_runs_openvino_fp32_and_asking_for_bf16_says_why(model):
    denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))
    assert (denoiser.runtime, denoiser.precision, len(denoiser.onnx.parts)) == ("openvino", "fp32", 1)
    for precision in ("mixed", "bf16"):
        with pytest.raises(InputError, match="native bf16"):
            VolumeDenoiser(model, EngineOptions(device="cpu", runtime="openvino", precision=precision))


def test_mixed_precision_is_openvinos_and_asking_another_runtime_for_it_is_an_error(model):
    for runtime in ("torch", "onnxruntime"):
        with pytest.raises(InputError, match="--precision mixed is OpenVINO's"):
            VolumeDenoiser(model, EngineOptions(device="cpu", runtime=runtime, precision="mixed"))


@requires_openvino
@pytest.mark.native_bf16
def test_on_a_cpu_with_native_bf16_auto_runs_the_full_resolution_levels_in_fp32_and_the_rest_in_bf16(model):
    hu = make_phantom((2, 64, 64)).array[:, :48, :40]
    denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))
    out = denoiser(hu)
    assert (denoiser.last_run["runtime"], denoiser.last_run["precision"]) == ("openvino", "mixed")
    assert [part for part, _ in denoiser.onnx.compiled] == ["first_level", "inner_levels", "last_level"]
    np.testing.assert_allclose(out, denoise_volume(hu, model, TORCH), atol=1.0)  # HU


@requires_openvino
@pytest.mark.native_bf16
def test_mixed_precision_needs_the_generators_levels():
    network = architecture("structkpn").build({"width": 4, "blocks": 1, "kernel_size": 3})
    structkpn = LoadedModel(network, Normalization(), manifest={}, name="kpn")
    with pytest.raises(InputError, match="attention residual U-Net"):
        VolumeDenoiser(structkpn, EngineOptions(device="cpu", runtime="openvino", precision="mixed"))
    auto = VolumeDenoiser(structkpn, EngineOptions(device="cpu", compile="off"))
    assert (auto.runtime, auto.precision) == ("openvino", "fp32")  # auto keeps it whole, in fp32


@requires_openvino
@pytest.mark.native_bf16
@pytest.mark.parametrize(("precision", "p99_hu"), [("mixed", 1.0), ("bf16", 5.0)])  # measured 0.70 and 3.47
def test_the_bundled_model_in_reduced_precision_on_two_real_slices_within_its_stated_tolerance(
        shared_ct, precision, p99_hu):
    bundled = [f / "Models" / "default" for f in resources_dirs() if (f / "Models" / "default").is_dir()]
    if not bundled:
        pytest.skip("no model bundled")
    model = load_model(bundled[0])
    ndct, low = _two_real_noisy_slices(shared_ct)
    reduced = VolumeDenoiser(model, EngineOptions(device="cpu", runtime="openvino", precision=precision))(low)
    difference = np.abs(reduced - VolumeDenoiser(model, TORCH)(low))[body_mask(ndct)]
    assert np.percentile(difference, 99) < p99_hu


def _two_real_noisy_slices(shared_ct) -> tuple[np.ndarray, np.ndarray]:
    """(NDCT, LDCT) of two held-out thorax-141 slices with scanner noise."""
    series = read_volume(shared_ct / "thorax-141")
    ndct = series.array[69:71].astype(np.float32)
    scan = ScannerNoise(added_noise_hu=40.0, filter="shepp-logan", cutoff=0.9, views=360)
    low = ndct + np.stack([scanner_noise_hu(s, float(series.spacing[0]), scan, np.random.default_rng(i))
                           for i, s in enumerate(ndct)])
    return ndct, low
