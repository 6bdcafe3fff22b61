"""The GPU recipe's parts that run anywhere: the packed training subset, training from it without
SimpleITK (the lent GPU machine has none), the wall-clock budget, and the simulator's device path."""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import tiny_training_config
from LDCTDenoiseLib.errors import OutputError
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.simulation.scanner import ScannerNoise, SliceProjection
from training.checkpoint import list_checkpoints, load_checkpoint
from training.config import DataConfig, NoiseConfig
from training.pack import PACK_MANIFEST, pack_dataset
from training.sampling import CropSpec, SlicePair, Stage1Crops
from training.trainer import Trainer
from training.volumes import SeriesCache, read_packed


def _pack(phantom_dataset, tmp_path, budget_mib=50.0, *overrides):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "data.validation=1", *overrides)
    packed = pack_dataset(config, tmp_path / "pack", budget_mib, SeriesCache(tmp_path / "cache", quiet=True))
    return config, packed


def test_a_pack_holds_each_training_and_validation_series_as_int16_hu_with_its_geometry(phantom_dataset, tmp_path):
    _, packed = _pack(phantom_dataset, tmp_path)
    with (tmp_path / "pack" / PACK_MANIFEST).open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["split"] for r in rows) == ["train", "train", "validation"]
    assert {r["patient"] for r in rows} == {p.name for p in packed}
    for row in rows:
        original = read_volume(phantom_dataset / row["patient"] / "ndct.nrrd")
        arrays = read_packed(tmp_path / "pack" / row["ndct"])
        assert arrays["hu"].shape[0] == original.array.shape[0]
        # the packed voxel (0, 0) of slice 0 lies where the original has the same HU value
        direction, spacing = arrays["direction"].reshape(3, 3), arrays["spacing"]
        offset = np.linalg.solve(direction * spacing, arrays["origin"] - np.asarray(original.origin))
        left, top = int(round(offset[0])), int(round(offset[1]))
        rows_, columns = arrays["hu"].shape[1:]
        np.testing.assert_array_equal(arrays["hu"], np.rint(original.array[:, top:top + rows_, left:left + columns]))
        assert rows_ >= 32 and columns >= 32  # a training crop always fits


def test_a_small_budget_thins_slices_evenly_and_keeps_every_series(phantom_dataset, tmp_path):
    _, full = _pack(phantom_dataset, tmp_path / "a")
    budget = 0.4 * sum(p.nbytes for p in full) / 2**20
    _, thin = _pack(phantom_dataset, tmp_path / "b", budget)
    assert sum(p.nbytes for p in thin) <= budget * 2**20
    assert all(1 <= t.slices < f.slices for t, f in zip(thin, full, strict=True))
    with pytest.raises(OutputError, match="even one slice per series needs"):
        _pack(phantom_dataset, tmp_path / "c", 0.001)
    with pytest.raises(OutputError, match="exists"):
        _pack(phantom_dataset, tmp_path / "b", budget)


def test_training_from_a_pack_needs_no_simpleitk(phantom_dataset, tmp_path):
    _pack(phantom_dataset, tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["SimpleITK"] = None  # as on the lent GPU machine: not installed
        from LDCTDenoiseLib.errors import InputError
        from LDCTDenoiseLib.io import read_volume
        from training.cli import main
        code = main(["stage1", "--config", "tiny", "--out", r"{tmp_path / 'run'}", "--quiet",
                     "--set", r"data.dataset={tmp_path / 'pack' / PACK_MANIFEST}", "--set", "noise.kind=scanner",
                     "--set", "noise.scanner={{added_noise_hu: [10, 40], views: [64, 64]}}",
                     "--set", "noise.reference_noise_hu=[0, 10]", "--set", "validation.scanner={{views: 64}}"])
        try:
            read_volume(r"{phantom_dataset / 'patient-0' / 'ndct.nrrd'}")
        except InputError as error:
            print("refused:", error)
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: SimpleITK is not installed" in done.stdout and "pip install SimpleITK" in done.stdout
    assert load_checkpoint(tmp_path / "run")["step"] == 4


def test_a_wall_clock_budget_stops_the_run_with_a_checkpoint(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false",
                                  "schedule.max_minutes=0.0001", "schedule.checkpoint_every=100")
    last = Trainer(config, tmp_path / "run", quiet=True).train()
    assert load_checkpoint(last)["step"] == 1 < config.total_steps
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path / "run")] == [1]


def test_the_simulator_given_a_device_runs_there_and_draws_as_on_the_default(phantom_dataset):
    hu = read_volume(phantom_dataset / "patient-0" / "ndct.nrrd").array[0]
    projection = SliceProjection.of(hu, 1.5)
    grid = (np.arange(40) - 20.0) * 1.5
    settings = ScannerNoise(added_noise_hu=30.0, filter="hann", cutoff=0.8, views=120)
    default = projection.noise_at_levels_hu(settings, (30.0, 8.0), np.random.default_rng(3), grid, grid)
    on_cpu = projection.noise_at_levels_hu(settings, (30.0, 8.0), np.random.default_rng(3), grid, grid, device="cpu")
    for a, b in zip(default, on_cpu, strict=True):
        np.testing.assert_array_equal(a, b)


def test_scanner_crops_survive_the_pickling_that_spawned_workers_need(phantom_dataset):
    volume = read_volume(phantom_dataset / "patient-0" / "ndct.nrrd")
    noise = NoiseConfig(kind="scanner", scanner={"views": [64, 64]}, reference_noise_hu=[0, 10])
    dataset = Stage1Crops([SlicePair(volume.array, pixel_mm=volume.spacing[0])],
                          CropSpec(32, seed=1, normalization=Normalization()), noise, DataConfig())
    copy = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(copy[3]["input"], dataset[3]["input"])
