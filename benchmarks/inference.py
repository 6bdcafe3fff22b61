"""Inference speed and memory for 512x512 slices: the engine against plain eager fp32 NCHW.

Each configuration runs in its own process so its peak memory (RSS on CPU, allocator peak on
CUDA) is its own. Timings exclude the first call (warm-up, and compilation where used), which
is reported separately. Weights are random unless --weights is given: speed does not depend on
them, but the bf16 HU differences printed at the end only mean something for trained weights.

    python benchmarks/inference.py                 # CPU (and CUDA when present)
    python benchmarks/inference.py --full-volume ../shared/data/ct/thorax-141
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel, load_model
from LDCTDenoiseLib.networks.hu2024 import Generator
from LDCTDenoiseLib.simulation import make_phantom

CONFIGS = {
    "cpu": [
        ("eager fp32 NCHW (baseline)", None),
        ("engine fp32 channels_last", EngineOptions(device="cpu", compile="off")),
        ("engine compiled fp32 (default for >= 100 slices)", EngineOptions(device="cpu", compile="on")),
        ("engine compiled bf16", EngineOptions(device="cpu", compile="on", precision="bf16")),
        ("engine default (auto runtime)", EngineOptions(device="cpu")),
        ("engine default, self-ensemble 2 views", EngineOptions(device="cpu", self_ensemble=2)),
        ("engine default, self-ensemble 8 views", EngineOptions(device="cpu", self_ensemble=8)),
    ],
    "cuda": [
        ("eager fp32 NCHW (baseline)", None),
        ("engine default (bf16, channels_last, auto batch)", EngineOptions(device="cuda", compile="off")),
        ("engine compiled bf16", EngineOptions(device="cuda", compile="on")),
        ("engine default, self-ensemble 8 views", EngineOptions(device="cuda", compile="off", self_ensemble=8)),
    ],
}


def model_for(weights: str | None) -> LoadedModel:
    if weights:
        return load_model(weights)
    torch.manual_seed(0)
    return LoadedModel(Generator().eval(), Normalization(), manifest={}, name="random (timing only)")


def measure(device: str, label: str, options: EngineOptions | None, slices: int, weights: str | None) -> dict:
    """Runs in a child process: warm-up call, then the timed call over ``slices`` slices."""
    hu = make_phantom((slices, 512, 512)).array
    model = model_for(weights)
    if options is None:
        network = model.generator.to(device)

        def run(volume):
            out = np.empty_like(volume)
            with torch.inference_mode():
                for index in range(volume.shape[0]):
                    x = torch.from_numpy(model.normalization.to_network(volume[index : index + 1])).unsqueeze(1)
                    out[index] = model.normalization.to_hu(network(x.to(device)).cpu().squeeze(1).numpy())[0]
            return out
    else:
        run = VolumeDenoiser(model, options)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run(hu[: min(4, slices)])
    first = time.perf_counter() - started
    started = time.perf_counter()
    run(hu)
    elapsed = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"device": device, "config": label, "first_call_s": round(first, 1),
            "s_per_slice": round(elapsed / slices, 3), "slices_per_s": round(slices / elapsed, 2),
            "peak_memory_gib": round(peak / 2**30, 2)}


def in_child(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def full_volume(path: str | None, weights: str | None) -> dict:
    volume = read_volume(path) if path else make_phantom((120, 512, 512))
    denoiser = VolumeDenoiser(model_for(weights))
    started = time.perf_counter()
    denoiser(volume.array)
    total = time.perf_counter() - started
    return {"source": path or "phantom 120x512x512", "slices": volume.array.shape[0],
            "wall_s_including_compile": round(total, 1), **denoiser.last_run}


def bf16_effect(device: str, weights: str | None, slices: int) -> dict:
    """How far bf16 autocast moves HU from fp32, compared with the size of the correction."""
    hu = make_phantom((slices, 512, 512)).array
    model = model_for(weights)
    fp32 = VolumeDenoiser(model, EngineOptions(device=device, compile="off", precision="fp32"))(hu)
    bf16 = VolumeDenoiser(model, EngineOptions(device=device, compile="off", precision="bf16"))(hu)
    diff = np.abs(bf16 - fp32)
    return {"device": device, "mean_abs_hu": round(float(diff.mean()), 3),
            "p99_abs_hu": round(float(np.percentile(diff, 99)), 3), "max_abs_hu": round(float(diff.max()), 3),
            "mean_abs_correction_hu": round(float(np.abs(fp32 - hu).mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=8, help="slices per timed call")
    parser.add_argument("--weights", help="model folder (default: random weights)")
    parser.add_argument("--full-volume", help="DICOM folder or volume to time end to end (default: phantom)")
    parser.add_argument("--skip-full-volume", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="measure one device only (default: the CPU, and CUDA when present)")
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = devices if args.device == "all" else [args.device]
    print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    rows = []
    for device in devices:
        baseline = None
        for label, options in CONFIGS[device]:
            row = in_child(device, label, options, args.slices, args.weights)
            baseline = baseline or row["s_per_slice"]
            row["speedup_vs_eager"] = round(baseline / row["s_per_slice"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    effects = [bf16_effect(device, args.weights, 2) for device in devices]
    for effect in effects:
        print("bf16 vs fp32:", json.dumps(effect), flush=True)
    volume = None if args.skip_full_volume else full_volume(args.full_volume, args.weights)
    if volume:
        print("full volume:", json.dumps(volume), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"configs": rows, "bf16": effects, "full_volume": volume}, indent=2))


if __name__ == "__main__":
    main()
