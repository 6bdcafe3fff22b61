"""Training configuration: the paper's presets, inheritance, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from LDCTDenoiseLib.errors import InputError
from training.config import METHOD_PRESETS, load_config


def test_paper_stage1_preset_holds_the_papers_schedule():
    config = load_config("paper-stage1")
    assert config.stage == "stage1"
    assert (config.optim.lr, config.optim.betas, config.optim.lr_gamma, config.optim.lr_step_epochs) == (
        1e-3, [0.5, 0.999], 0.7, 40)
    assert (config.schedule.epochs, config.schedule.batch, config.data.crop) == (200, 16, 128)
    assert (config.loss.l1, config.loss.ssim, config.loss.perceptual) == (1.0, 2.0, 1.0)
    assert config.noise.kind == "gaussian"


def test_paper_stage2_preset_holds_the_papers_schedule():
    config = load_config("paper-stage2")
    assert config.stage == "stage2"
    assert (config.optim.lr, config.optim.lr_gamma, config.optim.lr_step_epochs) == (1e-5, 0.6, 40)
    assert (config.schedule.epochs, config.schedule.batch, config.data.crop) == (200, 20, 128)
    assert (config.loss.gradient_penalty, config.optim.critic_steps, config.loss.structure) == (10.0, 3, 0.0)


def test_ablations_inherit_from_the_paper_presets():
    one_step = load_config("ablation-onestep")
    assert one_step.stage == "stage2" and one_step.init_from is None and one_step.optim.lr == 1e-5
    assert one_step.name == "ablation-onestep"
    assert load_config("ablation-firststep").to_dict() | {"name": None} == load_config("paper-stage1").to_dict() | {
        "name": None}


def test_every_bundled_preset_loads():
    for path in METHOD_PRESETS.glob("*/presets/*.yaml"):
        assert load_config(path.stem).name == path.stem


def test_overrides_are_parsed_as_yaml_and_paths_resolve_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config("tiny", ["schedule.epochs=7", "noise.gaussian_std_hu=[5, 15]", "data.dataset=data"])
    assert config.schedule.epochs == 7 and config.noise.gaussian_std_hu == [5, 15]
    assert config.data.dataset == str(tmp_path / "data")


def test_paths_in_a_config_file_are_relative_to_that_file(tmp_path):
    (tmp_path / "configs").mkdir()
    file = tmp_path / "configs" / "mine.yaml"
    file.write_text(f"base: {METHOD_PRESETS / 'hu2024' / 'presets' / 'tiny.yaml'}\ndata:\n  dataset: ../my-data\n")
    assert load_config(file).data.dataset == str((tmp_path / "my-data").resolve())


def test_cpu_preset_points_at_the_shared_dataset_manifest():
    dataset = Path(load_config("cpu-stage1").data.dataset)
    assert dataset.name == "shared-ct.csv" and dataset.is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [("schedule.epoch=3", "unknown config key schedule.epoch"), ("lr=1", "unknown config key lr"),
     ("schedule", "section.key=value"), ("optim=3", "is a section")],
)
def test_bad_keys_are_errors_that_name_them(override, message):
    with pytest.raises(InputError, match=message):
        load_config("tiny", [override])


def test_unknown_preset_lists_the_bundled_ones():
    with pytest.raises(InputError, match="paper-stage1"):
        load_config("no-such-preset")


def test_numbers_written_without_a_dot_are_numbers():
    config = load_config("tiny", ["optim.lr=1e-4", "init_from=null"])
    assert config.optim.lr == 1e-4
    with pytest.raises(InputError, match="optim.lr wants a number"):
        load_config("tiny", ["optim.lr=fast"])
