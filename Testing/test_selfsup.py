"""``ldct-train selfsup``: training on a folder of one's own low-dose series, with no normal-dose scan,
resumable, exported as a model folder with a card that names no folder or patient."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, write_volume
from LDCTDenoiseLib.models.weights import MANIFEST_NAME, WEIGHTS_NAME, load_model
from LDCTDenoiseLib.simulation import make_phantom
from training.cli import main
from training.selfsup import selfsup


def low_dose_series(slices: int, seed: int, size: int = 64) -> Volume:
    clean = make_phantom((slices, size, size), seed=seed)
    noise = np.random.default_rng(seed + 100).normal(0, 60, clean.array.shape).astype(np.float32)
    return clean.with_array(clean.array + noise)


@pytest.fixture
def own_scans(tmp_path):
    """Two usable low-dose series of 'patient' folders (one NRRD, one DICOM) and one too short to serve."""
    folder = tmp_path / "my-scanner"
    for patient in ("SMITH^ANNA", "DOE^JOHN"):
        (folder / patient).mkdir(parents=True)
    write_volume(low_dose_series(16, 1), folder / "SMITH^ANNA" / "abdomen.nrrd")
    write_volume(low_dose_series(16, 2), folder / "DOE^JOHN" / "dicom")
    write_volume(low_dose_series(4, 3), folder / "short.nrrd")
    return folder


def test_selfsup_trains_on_the_usable_series_and_exports_a_model_with_a_card(own_scans, tmp_path, tiny_model_dir,
                                                                               capsys):
    run = tmp_path / "run"
    # from scratch: a random base model's outputs show no shared band, so fine-tuning from one learns nothing
    assert main(["selfsup", "--data", str(own_scans), "--model", str(tiny_model_dir), "--from-scratch",
                 "--steps", "80", "--out", str(run), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "2 series; 80 steps" in printed.out and "short.nrrd (4 slices): skipped" in printed.err
    model = load_model(run / "model")
    provenance = model.manifest["provenance"]["selfsup"]
    assert provenance["data"]["series_found"] == 3 and provenance["data"]["series_used"] == 2
    assert provenance["started_from"] == "scratch (the network of tiny)" and provenance["started_from_sha256"] is None
    assert provenance["validation_loss_best"] < provenance["validation_loss_before"]
    card = (run / "model" / "MODEL_CARD.md").read_text()
    assert "2 of 3 series usable, 32 slices" in card and f"best at step {provenance['best_step']}" in card
    for text in (card, (run / "model" / MANIFEST_NAME).read_text()):
        assert "SMITH" not in text and "DOE" not in text and str(tmp_path) not in text


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(own_scans, tmp_path, tiny_model_dir):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    selfsup(str(tiny_model_dir), own_scans, straight, steps=80, from_scratch=True, quiet=True)
    selfsup(str(tiny_model_dir), own_scans, halves, steps=40, from_scratch=True, quiet=True)
    with pytest.raises(InputError, match="already holds checkpoints; pass --resume"):
        selfsup(str(tiny_model_dir), own_scans, halves, steps=80, from_scratch=True, quiet=True)
    resumed = selfsup(str(tiny_model_dir), own_scans, halves, steps=80, from_scratch=True, resume=True, quiet=True)
    assert resumed.steps == 80
    first, second = (load_file(str(run / "model" / WEIGHTS_NAME)) for run in (straight, halves))
    assert all(np.array_equal(first[key], second[key]) for key in first)


def test_resume_refuses_other_data_and_a_folder_without_series_is_named(own_scans, tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    selfsup(str(tiny_model_dir), own_scans, run, steps=40, from_scratch=True, quiet=True)
    (own_scans / "short.nrrd").unlink()
    write_volume(low_dose_series(16, 4), own_scans / "third.nrrd")
    with pytest.raises(InputError, match="was trained on other data"):
        selfsup(str(tiny_model_dir), own_scans, run, steps=80, from_scratch=True, resume=True, quiet=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["selfsup", "--data", str(empty), "--model", str(tiny_model_dir), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 1
    with pytest.raises(InputError, match="no DICOM series or volume files"):
        selfsup(str(tiny_model_dir), empty, tmp_path / "r", steps=1, quiet=True)


def test_from_scratch_starts_from_new_weights_of_the_same_network(own_scans, tmp_path, tiny_model_dir):
    result = selfsup(str(tiny_model_dir), own_scans, tmp_path / "run", steps=40, from_scratch=True, quiet=True)
    manifest = json.loads((result.model / MANIFEST_NAME).read_text())
    assert manifest["provenance"]["selfsup"]["started_from_sha256"] is None
    assert manifest["architecture"] == load_model(tiny_model_dir).manifest["architecture"]
