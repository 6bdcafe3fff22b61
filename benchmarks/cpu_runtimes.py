"""CPU runtimes side by side for the bundled model (issue 15): speed and HU accuracy in one run.

Every path denoises the same held-out real slices (thorax-141, LIDC-IDRI-0003, with the demo's
scanner noise); figures: s/slice (warm, median of repeats), first-call time (export/compile/session
creation and the first slice), peak RSS of its own child process, and the HU difference from
torch fp32 inside the body (mean, 99th percentile, max) with PSNR/SSIM against the NDCT in the
soft-tissue window. int8 is post-training static quantization (QDQ, per-channel weights, symmetric)
calibrated on slices of training subjects (LIDC-IDRI-0001, LungFCP) with scanner noise. Last, the
141-slice thorax-141 series DICOM in to DICOM out with the default engine, split into read,
denoise and write.

    python benchmarks/cpu_runtimes.py [--weights Resources/Models/default] [--repeats 3] [--skip-full-volume]

Runs on the default install (OpenVINO, ONNX Runtime and onnx are dependencies).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE, slice_metrics
from LDCTDenoiseLib.compare.roi import body_mask
from LDCTDenoiseLib.engine import onnx_runtime
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.weights import CACHE_ENV, load_model
from LDCTDenoiseLib.simulation import ScannerNoise, scanner_noise_hu

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"
HELD_OUT = [("thorax-141", 70), ("lidc-idri/LIDC-IDRI-0003", 5)]
CALIBRATION = [("lidc-idri/LIDC-IDRI-0001", k) for k in (2, 8, 14)] + [("lungfcp/LungFCP-01-0001", k) for k in (20, 60)]
SCAN = ScannerNoise(added_noise_hu=40.0, filter="shepp-logan", cutoff=0.9, views=984, electronic_std=10.0,
                    bowtie=1.5, modulation=0.5)
PATHS = ("torch eager fp32", "torch engine fp32 channels_last", "torch compiled fp32",
         "engine onnxruntime fp32 (fallback)", "onnxruntime int8", "engine openvino fp32 (default without native bf16)",
         "openvino int8", "engine openvino mixed (default with native bf16)", "engine openvino bf16")


def noisy_slices(entries: list[tuple[str, int]], seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(NDCT, LDCT) stacks of 512 x 512 slices and their pixel sizes."""
    ndct, ldct, pixels = [], [], []
    for index, (series, k) in enumerate(entries):
        volume = read_volume(DATA / series)
        hu = np.ascontiguousarray(volume.array[k], dtype=np.float32)
        ndct.append(hu)
        ldct.append(hu + scanner_noise_hu(hu, float(volume.spacing[0]), SCAN, np.random.default_rng(seed + index)))
        pixels.append(float(volume.spacing[0]))
    return np.stack(ndct), np.stack(ldct), pixels


def export_onnx(weights: str, path: Path) -> None:
    """The engine's own graph (the correction, dynamic sizes): what the default path runs and int8 quantizes."""
    onnx_runtime.export_graph(load_model(weights), path)


def quantize_int8(weights: str, fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = load_model(weights)
    _, calibration, _ = noisy_slices(CALIBRATION, seed=100)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": model.normalization.to_network(s)[None, None].astype(np.float32)}
                               for s in calibration])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def runner(path: str, weights: str, folder: Path, threads: int):
    """A function from one normalised (1, 1, 512, 512) array to the output, made for ``path``."""
    torch.set_num_threads(threads)
    if path == "torch eager fp32":
        generator = load_model(weights).generator.eval()

        def eager(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():  # no autograd graph: the baseline a user's plain torch loop would be
                image = torch.from_numpy(x)
                return (image + generator.residual(image)).numpy()

        return eager
    if path.startswith(("torch", "engine")):
        runtime = path.split()[1] if path.startswith("engine") else "torch"
        precision = path.split()[2] if path.startswith("engine") else "fp32"
        # keep-noise off: every row computes the network's whole correction, so the HU columns compare runtimes
        options = EngineOptions(device="cpu", compile="on" if "compiled" in path else "off", precision=precision,
                                runtime=runtime, keep_noise_hu=0.0)
        denoiser = VolumeDenoiser(load_model(weights), options)
        normalization = denoiser.model.normalization
        return lambda x: normalization.to_network(denoiser(normalization.to_hu(x[0]))).astype(np.float32)[None]
    onnx_file = folder / ("int8.onnx" if "int8" in path else "fp32.onnx")
    if path.startswith("onnxruntime"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        return lambda x: x + session.run(None, {"x": x})[0]
    import openvino

    core = openvino.Core()
    graph = core.read_model(str(onnx_file))
    graph.reshape([1, 1, 512, 512])  # static, as the slices are
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32"})  # its default may be bf16
    return lambda x: x + compiled([x])[0]


def measure(path: str, weights: str, folder: str, repeats: int, threads: int) -> dict:
    """In a child process: first call, warm timings and outputs (HU) on the held-out slices.

    The slices come from a small file, so the child's peak RSS is the runtime's and the model's.
    """
    os.environ[CACHE_ENV] = str(Path(folder) / "cache")  # the engine's graph is exported at first use, as a user's is
    model = load_model(weights)
    ldct = np.load(Path(folder) / "ldct.npy")
    started = time.perf_counter()
    run = runner(path, weights, Path(folder), threads)
    inputs = [model.normalization.to_network(s)[None, None].astype(np.float32) for s in ldct]
    run(inputs[0])
    first = time.perf_counter() - started
    times, outputs = [], []
    for _ in range(repeats):
        outputs = []
        for x in inputs:
            started = time.perf_counter()
            outputs.append(model.normalization.to_hu(run(x)[0, 0]))
            times.append(time.perf_counter() - started)
    return {"path": path, "first_call_s": round(first, 1), "s_per_slice": round(float(np.median(times)), 3),
            "peak_rss_gib": round(_peak_rss_bytes() / 2**30, 2),
            "outputs": np.stack(outputs).tolist()}


def _peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM: reset by exec, unlike getrusage's ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(Path(__file__).resolve().parents[1] / "Resources/Models/default"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-full-volume", action="store_true", help="leave out the 141-slice DICOM round trip")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.threads} threads", flush=True)
    ndct, ldct, _ = noisy_slices(HELD_OUT, seed=0)
    body = body_mask(ndct)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "ldct.npy", ldct)
        started = time.perf_counter()
        export_onnx(args.weights, Path(folder) / "fp32.onnx")
        print(f"ONNX export: {time.perf_counter() - started:.1f} s", flush=True)
        if any("int8" in p for p in args.paths):
            started = time.perf_counter()
            quantize_int8(args.weights, Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx")
            print(f"int8 calibration and quantization: {time.perf_counter() - started:.1f} s", flush=True)
        for path in args.paths:
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                row = pool.apply(measure, (path, args.weights, folder, args.repeats, args.threads))
            outputs = np.asarray(row.pop("outputs"), dtype=np.float32)
            reference = outputs if reference is None else reference
            difference = np.abs(outputs - reference)[body]
            metrics = [slice_metrics(o, n, SOFT_TISSUE) for o, n in zip(outputs, ndct, strict=True)]
            row.update({
                "speedup_vs_first": round(rows[0]["s_per_slice"] / row["s_per_slice"], 2) if rows else 1.0,
                "hu_diff_mean": round(float(difference.mean()), 3),
                "hu_diff_p99": round(float(np.percentile(difference, 99)), 3),
                "hu_diff_max": round(float(difference.max()), 2),
                "psnr_soft": round(float(np.mean([m["psnr"] for m in metrics])), 3),
                "ssim_soft": round(float(np.mean([m["ssim"] for m in metrics])), 4),
            })
            rows.append(row)
            print(json.dumps(row), flush=True)
    volume = None if args.skip_full_volume else full_volume(args.weights)
    if volume:
        print("full volume:", json.dumps(volume), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"paths": rows, "full_volume": volume}, indent=1))


def full_volume(weights: str) -> dict:
    """thorax-141 (141 slices) DICOM in, DICOM out with the default engine: read, denoise, write."""
    from LDCTDenoiseLib.io import write_volume

    started = time.perf_counter()
    volume = read_volume(DATA / "thorax-141")
    read = time.perf_counter() - started
    denoiser = VolumeDenoiser(load_model(weights))
    started = time.perf_counter()
    denoised = denoiser.labelled(volume, denoiser(volume.array))
    denoise = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_volume(denoised, Path(folder) / "denoised", description=denoiser.description)
        write = time.perf_counter() - started
    return {"series": "thorax-141", "slices": volume.array.shape[0], "runtime": denoiser.runtime,
            "read_s": round(read, 1), "denoise_s": round(denoise, 1), "write_s": round(write, 1),
            "total_s": round(read + denoise + write, 1),
            "slices_per_s": round(volume.array.shape[0] / denoise, 2)}


if __name__ == "__main__":
    main()
