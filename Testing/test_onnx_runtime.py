"""The CPU fast path: ONNX Runtime runs the generator's exported correction as torch does."""

import logging

import numpy as np
import pytest

from conftest import tiny_generator
from LDCTDenoiseLib import onnx_runtime, openvino_runtime
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.inference import EngineOptions, VolumeDenoiser, denoise_volume
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.normalization import Normalization
from LDCTDenoiseLib.resources import resources_dirs
from LDCTDenoiseLib.roi import body_mask
from LDCTDenoiseLib.simulation import ScannerNoise, make_phantom, scanner_noise_hu
from LDCTDenoiseLib.weights import LoadedModel, load_model

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


def test_auto_takes_onnx_runtime_for_fp32_on_the_cpu_and_torch_otherwise(model):
    assert VolumeDenoiser(model, EngineOptions(device="cpu", compile="off")).runtime == "onnxruntime"
    assert VolumeDenoiser(model, EngineOptions(device="cpu", precision="bf16")).runtime == "torch"
    assert VolumeDenoiser(model, EngineOptions(device="cpu", compile="on")).runtime == "torch"
    with pytest.raises(InputError, match="runs fp32 on the CPU"):
        VolumeDenoiser(model, EngineOptions(device="cpu", precision="bf16", runtime="onnxruntime"))


def test_without_onnx_runtime_auto_runs_torch_with_a_note_and_asking_for_it_is_an_error(model, monkeypatch, caplog):
    monkeypatch.setattr(onnx_runtime, "available", lambda: False)
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


def test_a_failing_export_in_auto_falls_back_to_torch_with_a_warning(model, model_cache, monkeypatch, caplog):
    def broken(model, path):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_runtime, "export_graph", broken)
    with caplog.at_level(logging.WARNING):
        denoiser = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))
    assert denoiser.runtime == "torch" and "exporter broke" in caplog.text


def test_the_bundled_model_on_two_real_slices_within_a_hundredth_of_a_hu(shared_ct):
    bundled = [f / "Models" / "default" for f in resources_dirs() if (f / "Models" / "default").is_dir()]
    if not bundled:
        pytest.skip("no model bundled")
    model = load_model(bundled[0])
    series = read_volume(shared_ct / "thorax-141")
    ndct = series.array[69:71].astype(np.float32)
    scan = ScannerNoise(added_noise_hu=40.0, filter="shepp-logan", cutoff=0.9, views=360)
    low = ndct + np.stack([scanner_noise_hu(s, float(series.spacing[0]), scan, np.random.default_rng(i))
                           for i, s in enumerate(ndct)])
    difference = np.abs(VolumeDenoiser(model, ONNX)(low) - VolumeDenoiser(model, TORCH)(low))[body_mask(ndct)]
    assert np.percentile(difference, 99) < 0.01 and difference.max() < 0.1  # measured: see benchmarks/RESULTS.md


@pytest.mark.skipif(not openvino_runtime.available(), reason="openvino is not installed (an optional runtime)")
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
