"""Shared fixtures: real CT from ../shared/data when present, tiny models, DICOM series made here."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from LDCTDenoiseLib.io import Volume, write_dicom_series
from LDCTDenoiseLib.resources import resources_dirs

# torch is imported only where a test needs it: the Python 3.9 run (Slicer 5.8's packages) has none.
SHARED_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"
TINY_SIZES = dict(base_width=4, depth=2, cbam_reduction=2)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory) -> None:
    """Tests never read or fill the user's cache (models, compiled kernels)."""
    os.environ["LDCTDENOISE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(request, monkeypatch) -> None:
    """The engine's choices do not depend on the test machine's CPU: every test, and every process it
    starts, sees one without native bf16 (so auto means ONNX Runtime fp32) unless it is marked
    ``native_bf16`` (run only where there is)."""
    if request.node.get_closest_marker("native_bf16") is None:
        monkeypatch.setenv("LDCTDENOISE_NATIVE_BF16", "0")
        return
    monkeypatch.delenv("LDCTDENOISE_NATIVE_BF16", raising=False)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("openvino") is None:
        pytest.skip("needs torch and OpenVINO")
    from LDCTDenoiseLib.engine import openvino_runtime

    if not openvino_runtime.native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty cache folder, no resources override target and no $LDCTDENOISE_WEIGHTS."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(cache))
    monkeypatch.setenv("LDCTDENOISE_RESOURCES", str(tmp_path / "no-resources"))
    monkeypatch.delenv("LDCTDENOISE_WEIGHTS", raising=False)
    return cache


def skip_if_model_bundled() -> None:
    """A model bundled in this checkout's Resources/ is found before the cache, by design."""
    from LDCTDenoiseLib.models.weights import DEFAULT_MODEL, MANIFEST_NAME

    if any((folder / "Models" / DEFAULT_MODEL / MANIFEST_NAME).is_file() for folder in resources_dirs()):
        pytest.skip("a trained model is bundled in Resources/Models/default")


@pytest.fixture
def shared_ct() -> Path:
    if not SHARED_CT.is_dir():
        pytest.skip(f"real CT not present at {SHARED_CT} (it sits beside the checkout on developer machines and CI)")
    return SHARED_CT


def tiny_generator(seed: int = 0):
    """A small generator whose correction is not zero (random head), for fast tests."""
    import torch

    from LDCTDenoiseLib.networks.hu2024 import Generator, GeneratorConfig

    torch.manual_seed(seed)
    return Generator(GeneratorConfig(**TINY_SIZES)).eval()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    from LDCTDenoiseLib.models.normalization import Normalization
    from LDCTDenoiseLib.models.weights import save_model

    folder = tmp_path / "tiny-model"
    save_model(tiny_generator(), folder, Normalization(), provenance={"purpose": "tests; random weights"}, name="tiny")
    return folder


def rotated_direction(degrees: float = 30.0) -> np.ndarray:
    """A non-identity direction: rotation about the patient's S axis, then a tilt about L."""
    a, b = np.radians(degrees), np.radians(degrees / 3)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


def small_volume(shape=(6, 40, 48), direction=None, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    hu = np.rint(rng.normal(0, 200, size=shape)).astype(np.float32)
    return Volume(hu, spacing=(0.7, 0.8, 2.5), origin=(-12.5, 30.25, 101.0),
                  direction=rotated_direction() if direction is None else direction)


def add_volume_node(scene, volume: Volume, name: str = "CT"):
    """A scalar volume node holding ``volume`` (voxels and geometry), with display nodes."""
    from LDCTDenoiseLib.slicer.mrml_bridge import update_node_from_volume

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetName(name)
    update_node_from_volume(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


@pytest.fixture
def scene():
    """A real MRML scene from the slicer-core wheel (imported here only: most tests need no MRML)."""
    import slicer

    return slicer.vtkMRMLScene()


@pytest.fixture
def dicom_series(tmp_path: Path) -> tuple[Path, Volume]:
    """A DICOM series with a rotated orientation, written from a known volume."""
    volume = small_volume()
    folder = tmp_path / "series"
    write_dicom_series(volume, folder)
    return folder, volume


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """A dataset folder in the documented convention: three patients, each with a small ndct.nrrd."""
    from LDCTDenoiseLib.io import write_volume
    from LDCTDenoiseLib.simulation import make_phantom

    root = tmp_path_factory.mktemp("dataset")
    for index in range(3):
        (root / f"patient-{index}").mkdir()
        write_volume(make_phantom((4, 64, 64), seed=index), root / f"patient-{index}" / "ndct.nrrd")
    return root


def tiny_training_config(dataset: Path, cache: Path, *overrides: str):
    """The tiny preset on a dataset, with a test-private series cache."""
    from training.config import load_config

    return load_config("tiny", [f"data.dataset={dataset}", f"data.cache={cache}", *overrides])
