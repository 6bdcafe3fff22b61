"""Training throughput: crops/s and achieved GFLOP/s of the ``cpu-scanner`` recipe, before and after the noise bank.

Each row trains the real ``Trainer`` for a few steps on the training split of
``training/datasets/shared-ct-all.csv`` (``../shared/data``) at the recipe's crop size and batch,
and reads the seconds of each step (data wait included) from its log; the first steps are
warm-up. Rows:

- ``cpu-scanner`` as it trained the default: scanner noise simulated per crop in a DataLoader worker;
- the same with the noise cut from a bank simulated ahead (``data.noise_bank``), no worker, both
  cores on the network; then also in channels-last layout; then at a larger batch; and bf16
  autocast where the CPU has native bf16.

GFLOP/s counts the network's forward FLOPs (``torch.utils.flop_counter``) times three for forward
and backward, against the peak of a large fp32 matmul on the same threads. The bank is built
first if it is missing (its time is printed, not counted). Run with nothing else on the machine:
``python benchmarks/training.py [--steps 12] [--warmup 3]``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "LDCTDenoise")]

from LDCTDenoiseLib.engine.openvino_runtime import native_bf16  # noqa: E402
from LDCTDenoiseLib.networks import architecture  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import dataset_split  # noqa: E402
from training.noise_bank import config_bank  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from training.volumes import SeriesCache, training_volumes  # noqa: E402

PRESET = "cpu-scanner"
BANK = 6  # realisations per slice, as the issue-31 runs use


def rows(has_bf16: bool) -> list[tuple[str, list[str]]]:
    bank = [f"data.noise_bank={BANK}", "data.workers=0"]
    listed = [
        ("cpu-scanner: simulator per crop (1 worker)", []),
        ("noise bank, no worker", bank),
        ("noise bank + channels-last", [*bank, "channels_last=true"]),
        ("noise bank + channels-last, batch 12", [*bank, "channels_last=true", "schedule.batch=12"]),
    ]
    if has_bf16:
        listed.append(("noise bank + channels-last + bf16", [*bank, "channels_last=true", "amp=bf16"]))
    return listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="steps not timed at the start of each row")
    args = parser.parse_args()
    has_bf16 = native_bf16()
    base = load_config(PRESET, base_overrides())
    crop, forward = base.data.crop, forward_gflop(base)
    peak = matmul_peak_gflops()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; {base.architecture} "
          f"forward {forward:.2f} GFLOP per {crop} px crop; fp32 matmul peak {peak:.0f} GFLOP/s; "
          f"native bf16: {'yes' if has_bf16 else 'no (bf16 row left out)'}")
    build_bank(load_config(PRESET, [*base_overrides(), f"data.noise_bank={BANK}"]))
    print("| recipe | batch | s/step | crops/s | x cpu-scanner | GFLOP/s | % of matmul peak |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    first = None
    for name, overrides in rows(has_bf16):
        config = load_config(PRESET, [*base_overrides(), *overrides])
        seconds = timed_steps(config, args.steps, args.warmup)
        crops = config.schedule.batch / seconds
        first = first or crops
        achieved = crops * 3 * forward
        print(f"| {name} | {config.schedule.batch} | {seconds:.2f} | {crops:.2f} | {crops / first:.2f} | "
              f"{achieved:.0f} | {100 * achieved / peak:.0f} |", flush=True)


def base_overrides() -> list[str]:
    return ["init_from=null", "schedule.validate=false", "schedule.log_every=1", "schedule.checkpoint_every=100000",
            "amp=off"]


def build_bank(config) -> None:
    """The bank the rows read, built ahead (as ``ldct-train prepare`` does), its time printed if it was missing."""
    data = config.data
    cache = SeriesCache(data.cache, data.simulation_workers, quiet=True)
    bank = config_bank(config, training_volumes(config, dataset_split(data)["train"], cache), cache.folder)
    missing = len(bank.missing())
    if missing:
        started = time.perf_counter()
        bank.build(data.simulation_workers)
        print(f"# noise bank: {missing} whole-slice entries simulated in {time.perf_counter() - started:.0f} s "
              f"({data.simulation_workers} processes), once")


def timed_steps(config, steps: int, warmup: int) -> float:
    """Median seconds per step after ``warmup`` steps of a real training run."""
    config.schedule.epoch_samples = config.schedule.batch * (steps + warmup)
    config.schedule.epochs = 1
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, Path(run) / "run", quiet=True)
        trainer.train()
        with (Path(run) / "run" / "log.csv").open() as handle:
            seconds = sorted(float(row["seconds_per_step"]) for row in list(csv.DictReader(handle))[warmup:])
    return seconds[len(seconds) // 2]


def forward_gflop(config) -> float:
    network = architecture(config.architecture).build(config.network_config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(1, 1, config.data.crop, config.data.crop))
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


if __name__ == "__main__":
    main()
