"""Training runs: single steps learn, resume is exact, DDP averages gradients, export and evaluation."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_training_config
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.errors import Cancelled, InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import load_model
from LDCTDenoiseLib.networks.hu2024 import Generator
from training import distributed
from training.checkpoint import list_checkpoints, load_checkpoint
from training.cli import main
from training.config import NoiseConfig
from training.data import load_patients
from training.evaluate import evaluate, load_any_model
from training.export import export_model
from training.losses import supervised_loss
from training.sampling import CropSpec, SlicePair, Stage1Crops, StepBatches
from training.trainer import Trainer
from training.volumes import SeriesCache


def _fixed_batch(trainer: Trainer, batches: int = 1) -> list[dict]:
    iterator = trainer._batches()
    return [next(iterator) for _ in range(batches)]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


def test_a_stage1_step_changes_the_weights_and_lowers_the_loss_on_a_fixed_batch(phantom_dataset, tmp_path):
    trainer = Trainer(tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false"),
                      tmp_path / "run", quiet=True)
    (batch,) = _fixed_batch(trainer)
    before = _weights(trainer.generator)
    losses = [trainer.step_kind.run(trainer, [batch])["loss"] for _ in range(5)]
    assert _changed(before, trainer.generator)
    assert losses[-1] < losses[0]


def test_a_stage2_step_changes_both_networks_and_lowers_the_critic_loss_on_a_fixed_batch(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "stage=stage2", "schedule.validate=false",
                                  "optim.lr=1e-4")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    batches = _fixed_batch(trainer, config.optim.critic_steps)
    generator, critic = _weights(trainer.generator), _weights(trainer.critic)
    critic_losses = [trainer.step_kind.run(trainer, batches)["critic"] for _ in range(4)]
    assert _changed(generator, trainer.generator) and _changed(critic, trainer.critic)
    assert critic_losses[-1] < critic_losses[0]


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(phantom_dataset, tmp_path, stage):
    overrides = (f"stage={stage}", "schedule.validate=false", "schedule.checkpoint_every=2",
                 "schedule.keep_checkpoints=0")
    whole = tiny_training_config(phantom_dataset, tmp_path / "cache", *overrides)
    Trainer(whole, tmp_path / "whole", quiet=True).train()
    interrupted = tiny_training_config(phantom_dataset, tmp_path / "cache", *overrides, "schedule.epochs=1")
    Trainer(interrupted, tmp_path / "parts", quiet=True).train()
    halfway = list_checkpoints(tmp_path / "parts")[-1]
    assert load_checkpoint(halfway)["step"] == 2
    resumed = Trainer(tiny_training_config(phantom_dataset, tmp_path / "cache", *overrides), tmp_path / "parts",
                      resume=halfway, quiet=True)
    resumed.train()
    final_whole, final_resumed = (load_checkpoint(list_checkpoints(run)[-1]) for run in (tmp_path / "whole",
                                                                                          tmp_path / "parts"))
    assert final_whole["step"] == final_resumed["step"] == 4
    for key in ("generator", "critic") if stage == "stage2" else ("generator",):
        for name, value in final_whole[key].items():
            assert torch.equal(value, final_resumed[key][name]), name
    assert final_whole["g_optimizer"]["state"][0]["exp_avg"].equal(final_resumed["g_optimizer"]["state"][0]["exp_avg"])


def test_resume_refuses_a_checkpoint_of_the_other_stage(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false")
    last = Trainer(config, tmp_path / "run", quiet=True).train()
    with pytest.raises(InputError, match="stage1 checkpoint"):
        Trainer(tiny_training_config(phantom_dataset, tmp_path / "cache", "stage=stage2"), tmp_path / "other",
                resume=last, quiet=True)


def test_stage2_starts_from_the_stage1_weights_and_the_export_records_the_lineage(phantom_dataset, tmp_path):
    last = Trainer(tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false"),
                   tmp_path / "s1", quiet=True).train()
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "stage=stage2", "schedule.validate=false",
                                  f"init_from={tmp_path / 's1'}")
    stage2 = Trainer(config, tmp_path / "s2", quiet=True)
    for name, value in load_checkpoint(last)["generator"].items():
        assert torch.equal(stage2.generator.state_dict()[name], value)
    manifest = export_model(stage2.train(), tmp_path / "model")
    lineage = json.loads(manifest.read_text())["provenance"]["initialised_from"]
    assert [(step["run"], step["stage"], step["steps"]) for step in lineage] == [("s1", "stage1", 4)]
    assert str(tmp_path) not in manifest.read_text()  # the machine's folders: cut to their last name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(cache: Path, phantom_dataset: Path) -> Stage1Crops:
    patients = load_patients(phantom_dataset)
    volumes = [SlicePair(SeriesCache(cache, quiet=True).ndct(p).hu) for p in patients]
    return Stage1Crops(volumes, CropSpec(32, seed=0, normalization=Normalization()), noise=NoiseConfig())


def _ddp_gradients(rank: int, world_size: int, port: int, model: Generator, cache: Path, phantom_dataset: Path,
                   out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank))
    processes = distributed.start(torch.device("cpu"))
    wrapped = distributed.wrap(model, processes, torch.device("cpu"))
    dataset = _dataset(cache, phantom_dataset)
    (indices,) = StepBatches(4, 0, 1, processes.rank, processes.world_size)
    noisy = torch.stack([dataset[i]["input"] for i in indices])
    clean = torch.stack([dataset[i]["target"] for i in indices])
    supervised_loss(wrapped(noisy), clean, tiny_training_config(phantom_dataset, cache).loss, None)["loss"].backward()
    if processes.is_main:
        torch.save({k: p.grad for k, p in model.named_parameters()}, out)
    distributed.stop(processes)


def test_ddp_on_two_gloo_processes_matches_single_process_gradients(phantom_dataset, tmp_path):
    torch.manual_seed(0)
    model = Generator(tiny_training_config(phantom_dataset, tmp_path).network_config).train()
    reference = copy.deepcopy(model)
    _dataset(tmp_path / "cache", phantom_dataset)  # decode once before the processes start
    mp.spawn(_ddp_gradients, args=(2, _free_port(), model, tmp_path / "cache", phantom_dataset, tmp_path / "g.pt"),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "g.pt", weights_only=True)
    # One process, the same global batch: each process's share is normalised on its own (batch norm
    # statistics per process, as DDP on CPU does), and DDP averages the two gradients.
    dataset = _dataset(tmp_path / "cache", phantom_dataset)
    config = tiny_training_config(phantom_dataset, tmp_path).loss
    for rank in (0, 1):
        (indices,) = StepBatches(4, 0, 1, rank, 2)
        noisy = torch.stack([dataset[i]["input"] for i in indices])
        clean = torch.stack([dataset[i]["target"] for i in indices])
        (supervised_loss(reference(noisy), clean, config, None)["loss"] / 2).backward()
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(ddp[name], parameter.grad, rtol=1e-5, atol=1e-7)


def test_export_load_infer_round_trip(phantom_dataset, tmp_path):
    last = Trainer(tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false"),
                   tmp_path / "run", quiet=True).train()
    manifest = export_model(last, tmp_path / "model")
    loaded = load_model(manifest.parent)
    provenance = loaded.manifest["provenance"]
    assert (provenance["stage"], provenance["steps"], len(provenance["checkpoint"]["sha256"])) == ("stage1", 4, 64)
    assert provenance["config"]["model"]["base_width"] == 4
    volume = np.random.default_rng(0).normal(0, 100, (2, 48, 40)).astype(np.float32)
    from_export = VolumeDenoiser(loaded, EngineOptions(device="cpu", compile="off"))(volume)
    from_checkpoint = VolumeDenoiser(load_any_model(last), EngineOptions(device="cpu", compile="off"))(volume)
    np.testing.assert_array_equal(from_export, from_checkpoint)
    assert np.abs(from_export - volume).max() > 0  # the correction is applied


def test_evaluate_compares_model_input_and_gaussian_in_both_windows(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "data.test=1", "schedule.validate=false")
    last = Trainer(config, tmp_path / "run", quiet=True).train()
    result = evaluate(load_any_model(last), config, max_slices=2, device="cpu", quiet=True)
    assert len(result["patients"]) == 1 and result["gaussian_sigma_tuned_on"] == "validation"
    assert {(e["window"].split(" [")[0], e["method"]) for e in result["summary"]} == {
        (w, m) for w in ("soft tissue W400/L40", "full range") for m in ("input", "gaussian", "model")}
    assert all(np.isfinite(e["psnr"]) and e["slices"] == 2 for e in result["summary"])
    assert all("psnr_p_vs_model" in e for e in result["summary"] if e["method"] != "model")
    assert result["low_dose"]["dose_fraction"] == 0.25 and result["low_dose"]["seed"] == 1000


def test_cli_trains_exports_and_evaluates(phantom_dataset, tmp_path, capsys):
    data = ["--set", f"data.dataset={phantom_dataset}", "--set", f"data.cache={tmp_path / 'cache'}", "--quiet"]
    run, model = tmp_path / "run", tmp_path / "model"
    assert main(["stage1", "--config", "tiny", "--out", str(run), *data]) == 0
    assert main(["stage1", "--config", "tiny", "--out", str(run), *data]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["stage1", "--config", "tiny", "--out", str(run), "--resume", *data]) == 0  # already complete
    assert main(["export", str(run), "--out", str(model)]) == 0
    assert "inference" not in load_model(model).manifest  # the whole correction unless calibrated
    assert main(["export", str(run), "--out", str(tmp_path / "kept"), "--keep-noise", "11"]) == 0
    assert VolumeDenoiser(load_model(tmp_path / "kept"), EngineOptions(device="cpu")).keep_noise_hu == 11.0
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(model), "--config", "tiny", "--set", "data.test=1", "--max-slices", "1",
                 "--out", str(report), *data]) == 0
    assert "| model |" in capsys.readouterr().out.replace("W400/L40 [-160, 240] HU ", "")
    assert json.loads(report.read_text())["split"] == "test"
    assert (run / "log.csv").read_text().startswith("step,epoch,lr,seconds_per_step,l1,ssim,perceptual,loss")
    validation = (run / "validation.csv").read_text().splitlines()
    assert validation[0].startswith("step,output_psnr_soft,output_ssim_soft,output_rmse_hu_soft,output_psnr_full")
    assert len(validation) == 3  # one row per epoch


def test_cli_errors_are_one_line_with_the_fix(tmp_path, capsys):
    assert main(["stage1", "--config", "tiny", "--out", str(tmp_path / "run")]) == 1
    assert "data.dataset" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_at_the_current_step_and_says_how_to_resume(phantom_dataset, tmp_path, monkeypatch):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "schedule.validate=false",
                                  "schedule.checkpoint_every=100")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    original = trainer._train_step

    def interrupted_at_step_three(batches):
        if trainer.step == 2:
            raise KeyboardInterrupt
        return original(batches)

    monkeypatch.setattr(trainer, "_train_step", interrupted_at_step_three)
    with pytest.raises(Cancelled, match="--resume"):
        trainer.train()
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path / "run")] == [2]


def test_torchrun_with_two_gloo_processes_trains_both_stages(phantom_dataset, tmp_path):
    data = ["--set", f"data.dataset={phantom_dataset}", "--set", f"data.cache={tmp_path / 'cache'}", "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m", "training.cli"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage, extra in (("stage1", []), ("stage2", ["--set", f"init_from={tmp_path / 'stage1'}"])):
        done = subprocess.run([*launch, stage, "--config", "tiny", "--out", str(tmp_path / stage), *data, *extra],
                              capture_output=True, text=True, env=environment, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert load_checkpoint(tmp_path / stage)["step"] == 4


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_both_stages_train_on_scanner_noise_and_record_each_crops_draw(phantom_dataset, tmp_path, stage):
    scanner = "noise.scanner={added_noise_hu: [10, 40], views: [64, 96]}"
    config = tiny_training_config(
        phantom_dataset, tmp_path / "cache", f"stage={stage}", "noise.kind=scanner", scanner, "data.flips=true",
        "data.rot90=true", "data.pixel_scale=[0.8, 1.25]", "optim.critic_steps=1",
        "validation.scanner={added_noise_hu: 30, views: 64}")
    last = Trainer(config, tmp_path / "run", quiet=True).train()
    assert last is not None and load_checkpoint(last)["step"] == config.total_steps
    validation = (tmp_path / "run" / "validation.csv").read_text().splitlines()
    assert len(validation) == 1 + config.schedule.epochs
    if stage == "stage1":
        rows = (tmp_path / "run" / "samples.csv").read_text().splitlines()
        assert rows[0].startswith("step,added_noise_hu,filter")
        assert len(rows) == 1 + config.total_steps * config.schedule.batch
        assert all(10 <= float(row.split(",")[1]) <= 40 for row in rows[1:])


def test_frozen_batch_norm_keeps_the_initial_statistics_while_the_weights_learn(phantom_dataset, tmp_path):
    config = tiny_training_config(phantom_dataset, tmp_path / "cache", "optim.freeze_batch_norm=true")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    norms = [m for m in trainer.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    weights = _weights(trainer.generator)
    trainer.train()  # two epochs, with validation between them
    assert all(not m.training for m in norms) and trainer.generator.training
    assert all(torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
               for m, (mean, var) in zip(norms, before, strict=True))
    assert _changed(weights, trainer.generator)
