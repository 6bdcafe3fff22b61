"""The noise bank: scanner noise simulated ahead of training, reproducible, invalidated, training subjects only."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from conftest import tiny_training_config
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.simulation import make_phantom
from LDCTDenoiseLib.simulation.scanner import ScannerRanges
from training import noise_bank
from training.cli import main
from training.config import DataConfig, NoiseConfig
from training.data import load_patients, split_patients
from training.noise_bank import REFERENCE_LEVEL_HU, BankCrops, BankRecipe, NoiseBank
from training.sampling import CropSpec, SlicePair, Stage1Crops
from training.trainer import Trainer

RANGES = ScannerRanges(added_noise_hu=(20.0, 60.0), views=(64, 96))


def _volumes() -> list[SlicePair]:
    return [SlicePair(make_phantom((2, 48, 48), seed=i).array, pixel_mm=0.8, name=f"patient-{i}") for i in range(2)]


def _bank(folder, realisations=2, pixel_scale=(), reference=False) -> NoiseBank:
    return NoiseBank(folder, _volumes(), BankRecipe(RANGES, realisations, seed=3, pixel_scale=pixel_scale,
                                                    with_reference=reference))


def _files(bank: NoiseBank) -> dict[str, bytes]:
    return {str(p.relative_to(bank.folder)): p.read_bytes() for p in sorted(bank.folder.rglob("*.npy"))}


def test_a_bank_reproduces_from_its_seeds_whatever_the_processes_that_build_it(tmp_path):
    alone, forked = _bank(tmp_path / "one"), _bank(tmp_path / "two")
    alone.build(workers=1, quiet=True)
    forked.build(workers=2, quiet=True)
    assert len(_files(alone)) == 2 * 2 * 2
    assert _files(alone) == _files(forked)
    noise, drawn = alone.entry(1, 0, 1)
    assert noise.dtype == np.float16 and noise.shape == (2, 48, 48)
    assert 20 <= drawn["added_noise_hu"] <= 60 and 64 <= drawn["views"] <= 96
    assert np.std(noise[0].astype(np.float32)) > 5 and not np.any(noise[1])  # no reference noise asked for


def test_a_bank_grows_keeping_the_entries_it_has(tmp_path):
    small = _bank(tmp_path, realisations=1)
    small.build(quiet=True)
    kept = _files(small)
    larger = _bank(tmp_path, realisations=3)
    assert larger.folder == small.folder and len(larger.missing()) == 2 * 2 * 2
    larger.build(quiet=True)
    assert all(_files(larger)[name] == content for name, content in kept.items())


def test_a_changed_simulator_or_recipe_gets_a_new_bank(tmp_path, monkeypatch):
    built = _bank(tmp_path)
    built.build(quiet=True)
    assert not built.missing()
    assert _bank(tmp_path, pixel_scale=(0.8, 1.2)).folder != built.folder
    monkeypatch.setattr(noise_bank, "simulator_fingerprint", lambda: "another simulator")
    changed = _bank(tmp_path)
    assert changed.folder != built.folder and len(changed.missing()) == len(changed.entries())


def test_crops_cut_the_entries_noise_on_the_entries_grid(tmp_path):
    bank = _bank(tmp_path, realisations=1, reference=True)
    bank.build(quiet=True)
    crops = BankCrops(bank, 16, reference_noise_hu=(5.0, 5.0))
    noisy, reference, drawn = crops.pair(np.random.default_rng(0), 1, 0, 10, 20)
    noise, recorded = bank.entry(1, 0, 0)
    clean = bank.volumes[1].ndct[0, 10:26, 20:36]
    np.testing.assert_allclose(reference - clean, noise[1, 10:26, 20:36] * (5.0 / REFERENCE_LEVEL_HU), atol=1e-3)
    np.testing.assert_allclose(noisy - reference, noise[0, 10:26, 20:36], atol=1e-3)
    assert drawn["added_noise_hu"] == recorded["added_noise_hu"] and drawn["reference_noise_hu"] == 5.0


def test_a_rescaled_entry_keeps_the_crop_centred_where_the_slice_put_it(tmp_path):
    bank = _bank(tmp_path, realisations=1, pixel_scale=(1.3, 1.3))
    bank.build(quiet=True)
    _, reference, drawn = BankCrops(bank, 16).pair(np.random.default_rng(0), 0, 1, 16, 16)
    assert drawn["pixel_mm"] == pytest.approx(0.8 * 1.3)
    centre = bank.volumes[0].ndct[1, 22:26, 22:26].mean()  # the slice's centre, 48 px: rows 16..31 are central
    assert abs(reference[6:10, 6:10].mean() - centre) < 60


def test_samples_from_a_bank_are_a_function_of_the_index(tmp_path):
    bank = _bank(tmp_path)
    bank.build(quiet=True)
    dataset = Stage1Crops(bank.volumes, CropSpec(16, 0, Normalization()), NoiseConfig(kind="scanner"), DataConfig(),
                          BankCrops(bank, 16))
    first, again = dataset[7], dataset[7]
    assert all(np.array_equal(first[key], again[key]) for key in first)


def test_a_bank_holds_only_the_training_subjects_and_the_trainer_reads_it(phantom_dataset, tmp_path):
    overrides = ["noise.kind=scanner", "noise.scanner={added_noise_hu: [10, 40], views: [64, 96]}",
                 "data.noise_bank=2", "schedule.validate=false", "schedule.epochs=1"]
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", *overrides)
    assert main(["prepare", "--config", "tiny", "--quiet", "--set", f"data.dataset={phantom_dataset}",
                 "--set", f"data.cache={tmp_path / 'cache'}", *[a for o in overrides for a in ("--set", o)]]) == 0
    split = split_patients(load_patients(phantom_dataset), config.data.validation, config.data.test,
                           config.data.split_seed)
    (bank,) = (tmp_path / "cache" / "noise-bank").iterdir()
    folders = {p.name for p in bank.iterdir()}
    assert folders == {f"{zlib.crc32(p.name.encode()):08x}" for p in split["train"]}
    assert split["validation"] and all(f"{zlib.crc32(p.name.encode()):08x}" not in folders for p in split["validation"])
    built = sorted(bank.rglob("*.npy"))
    Trainer(config, tmp_path / "run", quiet=True).train()
    assert sorted(bank.rglob("*.npy")) == built  # read, not simulated again
    assert json.loads(built[0].with_suffix(".json").read_text())["views"] in range(64, 97)


def test_a_bank_for_an_unaligned_stage_is_refused_with_the_fix(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "stage=stage2", "noise.kind=scanner",
                                  "data.noise_bank=2")
    with pytest.raises(InputError, match="data.noise_bank=0"):
        Trainer(config, tmp_path / "run", quiet=True).train()
