"""Denoise a whole volume slice by slice on the best device, with progress and cancel.

Memory stays at input + output + one batch: slices are normalised batch by batch and the
result is written into a preallocated float32 array. The network's correction is added to
the unclipped input, so HU above the normalisation's clip range (metal) and padding are kept; noise
below its floor (air under -1024 HU) is part of what the correction takes away.
``strength`` scales that correction (vendors' deep-learning reconstructions offer low, medium
and high for the same reason: readers reject an over-smoothed look): 0 returns the input, 1 the
model's output. ``keep_noise_hu`` (by default the model manifest's ``inference.keep_noise_hu``)
scales it per slice by the noise it removes (``noise_level``), so that a scan already at normal
dose keeps its own noise and texture instead of being smoothed past its true image, and keeps soft
tissue's local mean HU, which noise removal has no reason to move; by default that keep follows the
series' reconstruction kernel (``kernel`` module: a sharp kernel's normal dose is noisier).
``self_ensemble`` averages the correction over 2, 4 or 8 mirrored and transposed views of each slice
(``self_ensemble`` module) at as many times the network's time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ..errors import Cancelled, InputError
from ..io import Volume
from ..models.weights import LoadedModel, cache_dir
from ..networks import architecture_of
from .kernel import KEEP_FACTOR, KernelKind, series_kernel
from .noise_level import adapted_correction
from .options import EngineOptions
from .self_ensemble import DIHEDRAL_VIEWS, unview, view

CPU_COMPILE_MIN_SLICES = 100  # below this, compiling (about a minute cold) does not pay on CPU
ProgressCallback = Callable[[int, int], None]
logger = logging.getLogger(__name__)


class CancelToken:
    """Set from any thread (GUI button, signal handler) to stop a run between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def model_keep_noise_hu(model: LoadedModel) -> float:
    """The noise a normal-dose slice keeps under this model, as its manifest says (0: none asked for)."""
    return float(model.manifest.get("inference", {}).get("keep_noise_hu", 0.0))


def resolve_device(name: str = "auto") -> torch.device:
    """The device to run on; asking for one that is not there is an error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {name} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device mps asked for, but Apple MPS is not available; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype torch runs in (mixed is a graph runtime's; its network stays fp32 in torch)."""
    if precision == "mixed":
        return torch.float32
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class VolumeDenoiser:
    """A model placed on a device with a precision; denoises volumes of any number of slices."""

    def __init__(self, model: LoadedModel, options: EngineOptions | None = None) -> None:
        self.model = model
        self.options = options or EngineOptions()
        self.device = resolve_device(self.options.device)
        self.dtype = resolve_precision(self.options.precision, self.device)
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise InputError("fp16 is not supported on CPU; use --precision fp32 or bf16")
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.network = model.generator.to(self.device, memory_format=self.memory_format).eval()
        self._compiled: dict[tuple, Callable] = {}
        self.onnx = self._onnx_correction()
        self.kernel: KernelKind | None = None  # the last run's, where the keep followed it
        self.keep_noise_hu = self.keep_for(self.options.kernel)  # the last run's keep (before one: for the option)
        self.last_run: dict = {}
        self._weights: list[float] = []  # the share of the correction each slice of the current run got
        self._noise: list[float] = []  # the input noise the rule measured on each slice of the current run

    def keep_for(self, kernel: str) -> float:
        """The keep-noise for a series of this kernel kind: the option where set, else the model's scaled to it."""
        if self.options.keep_noise_hu is not None:
            return self.options.keep_noise_hu
        return model_keep_noise_hu(self.model) * KEEP_FACTOR.get(kernel, 1.0)

    @property
    def runtime(self) -> str:
        return "torch" if self.onnx is None else self.onnx.name

    @property
    def precision(self) -> str:
        """What the slices are computed in, named as --precision names it (fp32, bf16, fp16, mixed)."""
        if self.onnx is not None:
            return self.onnx.precision
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def header(self) -> dict[str, str]:
        """What made the output, for its file header (NRRD and MHA key-value fields)."""
        return {"LDCTDenoise_model": str(self.model.describe()["name"]),
                "LDCTDenoise_strength_percent": f"{100 * self.options.strength:g}",
                "LDCTDenoise_keep_noise_hu": f"{self.keep_noise_hu:g}",
                "LDCTDenoise_self_ensemble": str(self.options.self_ensemble)}

    def labelled(self, source: Volume, denoised: np.ndarray) -> Volume:
        """The result with the source's geometry and a header naming the model and strength that made it."""
        result = source.with_array(denoised)
        result.metadata["header"] = {**result.metadata.get("header", {}), **self.header}
        return result

    @property
    def description(self) -> str:
        """The derived DICOM series' description suffix: a reader sees the strength in the series list."""
        keep = f", keep {self.keep_noise_hu:g} HU" if self.keep_noise_hu else ""
        views = f", {self.options.self_ensemble} views" if self.options.self_ensemble > 1 else ""
        return f"denoised {100 * self.options.strength:g}%{keep}{views} (LDCTDenoise)"

    def __call__(
        self,
        hu: np.ndarray,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        header_kernel: str | None = None,
    ) -> np.ndarray:
        """Denoised HU (float32, same shape); ``hu`` is (slices, rows, columns) and never modified.

        ``header_kernel`` is the series' ConvolutionKernel where its header names one (``Volume.metadata``).
        """
        if hu.ndim != 3:
            raise InputError(f"expected a (slices, rows, columns) volume; got shape {hu.shape}")
        if not np.isfinite(hu).all():
            raise InputError("the volume contains NaN or infinite values; fix or mask them before denoising")
        self._follow_kernel(hu, header_kernel)
        slices = hu.shape[0]
        batch = self._initial_batch_size(hu.shape[1:])
        forward = self._forward_for(slices) if self.onnx is None else self.network
        output = np.empty(hu.shape, dtype=np.float32)
        self._weights, self._noise = [], []
        started = time.perf_counter()
        done = 0
        while done < slices:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("denoising cancelled; nothing was written")
            stop = min(done + batch, slices)
            try:
                output[done:stop] = self._denoise_batch(forward, hu[done:stop], batch)
            except torch.OutOfMemoryError:
                batch = self._halve(batch)
                continue
            except Exception as error:  # any compiler failure: eager runs the same model
                if not self._is_compiled(forward):
                    raise
                forward = self._fall_back_to_eager(error)
                continue
            done = stop
            if progress is not None:
                progress(done, slices)
        elapsed = time.perf_counter() - started
        self.last_run = {
            "device": str(self.device), "runtime": self.runtime, "precision": self.precision,
            "batch_size": batch, "compiled": self._is_compiled(forward), "slices": slices,
            "seconds": round(elapsed, 3), "slices_per_second": round(slices / elapsed, 3) if elapsed else None,
            "strength_percent": round(100 * self.options.strength, 1), "keep_noise_hu": self.keep_noise_hu,
            "self_ensemble": self.options.self_ensemble,
            "kernel": self.kernel.describe() if self.kernel else None,
            "applied_percent": [round(100 * min(self._weights), 1), round(100 * max(self._weights), 1)]
            if self._weights else [],
            "applied_median_percent": round(100 * float(np.median(self._weights)), 1) if self._weights else None,
            "input_noise_hu": round(float(np.median(self._noise)), 1) if self._noise else None,
        }
        return output

    def _follow_kernel(self, hu: np.ndarray, header_kernel: str | None) -> None:
        """The run's keep-noise: the option's, or the model's scaled to the kernel (header, option or noise)."""
        follows = self.options.keep_noise_hu is None and model_keep_noise_hu(self.model) > 0
        self.kernel = series_kernel(hu, self.options.kernel, header_kernel) if follows else None
        self.keep_noise_hu = self.keep_for(self.kernel.kind if self.kernel else "standard")

    def _denoise_batch(self, forward: Callable, hu_batch: np.ndarray, batch: int) -> np.ndarray:
        hu_batch = np.asarray(hu_batch, dtype=np.float32)
        normalization = self.model.normalization
        correction = self._correction(forward, hu_batch, batch) * np.float32(normalization.scale)
        correction += normalization.floor_lift(hu_batch)
        for index, (slice_hu, slice_correction) in enumerate(zip(hu_batch, correction)):
            slice_correction, weight, noise = adapted_correction(slice_hu, slice_correction, self.keep_noise_hu)
            weight *= self.options.strength
            self._weights.append(weight)
            if noise is not None:
                self._noise.append(noise)
            correction[index] = slice_correction * np.float32(weight)
        return hu_batch + correction

    def _correction(self, forward: Callable, hu_batch: np.ndarray, batch: int) -> np.ndarray:
        """The network's correction in its normalised units, (slices, rows, columns) float32, averaged over views."""
        network_in = self.model.normalization.to_network(hu_batch)
        views = DIHEDRAL_VIEWS[:self.options.self_ensemble]
        total = sum(unview(self._network_correction(forward, view(network_in, *how), batch), *how)
                    for how in views)  # each sum a new array: no runtime's output buffer is kept
        return total / np.float32(len(views))

    def _network_correction(self, forward: Callable, network_in: np.ndarray, batch: int) -> np.ndarray:
        if self.onnx is not None:
            return self.onnx(network_in[:, None])[:, 0]
        count = network_in.shape[0]
        if self._is_compiled(forward) and count < batch:  # keep one static shape: no recompiling
            network_in = np.concatenate([network_in, np.repeat(network_in[-1:], batch - count, axis=0)])
        x = torch.from_numpy(network_in).unsqueeze(1).to(self.device, memory_format=self.memory_format)
        with torch.inference_mode(), self._autocast():
            y = forward(x)
        return (y.float() - x).squeeze(1)[:count].cpu().numpy()

    def _onnx_correction(self):
        """The exported graph's runner when the options ask for one (or auto finds it worth it), else None.

        auto on the CPU takes OpenVINO (mixed precision where the CPU has native bf16, else fp32: the
        fastest on every CPU measured, benchmarks/RESULTS.md), then ONNX Runtime fp32, unless
        torch.compile or a torch precision was asked for; each runtime missing or failing says so once
        and the next runs, torch last. A runtime or precision asked for explicitly that is missing or
        fails is an error.
        """
        from . import openvino_runtime

        wanted, precision, on_cpu = self.options.runtime, self.options.precision, self.device.type == "cpu"
        if precision == "mixed" and (wanted in ("torch", "onnxruntime") or not on_cpu):
            raise InputError("--precision mixed is OpenVINO's on the CPU: use --runtime openvino (or auto) "
                             "--device cpu, or another precision")
        if wanted == "torch" or (wanted == "auto" and (not on_cpu or precision in ("bf16", "fp16")
                                                       or self.options.compile == "on")):
            return None
        if wanted == "onnxruntime" and (not on_cpu or precision not in ("auto", "fp32")):
            raise InputError(f"the onnxruntime runtime runs fp32 on the CPU; got {self.device} {precision}: "
                             "use --device cpu --precision fp32, or --runtime torch or openvino")
        if wanted == "openvino" or precision == "mixed":
            if not on_cpu:
                raise InputError(f"the openvino runtime runs on the CPU; got {self.device}: use --device cpu")
            if not openvino_runtime.available():
                raise InputError("OpenVINO is not installed (needed for --runtime openvino and --precision mixed): "
                                 "pip install openvino onnx")
            precision = openvino_runtime.auto_precision(self.model) if precision == "auto" else precision
            return openvino_runtime.OpenVinoCorrection(self.model, precision)
        if wanted == "auto":
            graph = self._openvino_if_installed(precision)
            if graph is not None:
                return graph
        return self._onnx_runtime_correction()

    def _openvino_if_installed(self, precision: str):
        """OpenVINO in ``precision`` (auto: mixed where it pays, else fp32), or None with a note why not."""
        from . import openvino_runtime

        if not openvino_runtime.available():
            logger.info("OpenVINO is not installed: trying ONNX Runtime (pip install openvino for the fastest "
                        "CPU path)")
            return None
        try:
            chosen = openvino_runtime.auto_precision(self.model) if precision == "auto" else precision
            return openvino_runtime.OpenVinoCorrection(self.model, chosen)
        except Exception as error:  # an export or compile failure: ONNX Runtime runs the same model
            logger.warning("OpenVINO could not run this model (%s: %s); trying ONNX Runtime",
                           type(error).__name__, (str(error).strip().splitlines() or [""])[0])
            return None

    def _onnx_runtime_correction(self):
        from . import onnx_runtime

        wanted = self.options.runtime
        if not onnx_runtime.available():
            if wanted == "onnxruntime":
                raise InputError("--runtime onnxruntime needs ONNX Runtime and onnx: pip install onnxruntime onnx")
            logger.info("ONNX Runtime is not installed: running torch on the CPU (slower; pip install "
                        "onnxruntime onnx for the fast path)")
            return None
        try:
            return onnx_runtime.OnnxCorrection(self.model)
        except Exception as error:  # an export or session failure: torch runs the same model
            if wanted == "onnxruntime":
                raise
            logger.warning("ONNX Runtime could not run this model (%s: %s); running torch",
                           type(error).__name__, (str(error).strip().splitlines() or [""])[0])
            return None

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=enabled)

    def _initial_batch_size(self, image_shape: tuple[int, int]) -> int:
        if self.options.batch_size is not None:
            return self.options.batch_size
        if self.device.type == "cpu":
            return 1  # measured on 2 cores: batches of 1 beat 2 and 4 (cache-bound), eager and compiled
        if self.device.type != "cuda":
            return 4
        free, _total = torch.cuda.mem_get_info(self.device)
        bytes_per_element = 4 if self.dtype == torch.float32 else 2
        network = self.model.generator
        per_slice = architecture_of(network).bytes_per_pixel(network.config)  # estimated fp32 peak per pixel
        per_slice *= image_shape[0] * image_shape[1] * bytes_per_element // 4
        return int(np.clip(0.5 * free // per_slice, 1, 64))

    def _halve(self, batch: int) -> int:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch == 1:
            raise torch.OutOfMemoryError(
                f"out of memory on {self.device} with a single slice; use --device cpu or a smaller volume"
            )
        return batch // 2

    def _forward_for(self, slices: int) -> Callable:
        if not self._should_compile(slices):
            return self.network
        key = (self.device.type, self.dtype)
        if key not in self._compiled:
            _use_persistent_compile_cache()
            try:
                self._compiled[key] = torch.compile(self.network, dynamic=False, options={"freezing": True})
            except Exception as error:  # e.g. a torch whose Dynamo does not support this Python
                return self._fall_back_to_eager(error)
        return self._compiled[key]

    def _fall_back_to_eager(self, error: Exception) -> Callable:
        """torch.compile failed (no working compiler, an unsupported build): run eagerly, say so once."""
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        logger.warning("torch.compile failed (%s: %s); running without it", type(error).__name__, first_line)
        self.options = dataclasses.replace(self.options, compile="off")
        self._compiled.clear()
        return self.network

    def _is_compiled(self, forward: Callable) -> bool:
        return forward is not self.network

    def _should_compile(self, slices: int) -> bool:
        mode = self.options.compile
        if mode == "off" or (mode == "auto" and (self.device.type != "cpu" or slices < CPU_COMPILE_MIN_SLICES)):
            return False
        has_compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
        if self.device.type == "cpu" and not has_compiler:
            if mode == "on":
                raise InputError("torch.compile on CPU needs a C++ compiler (g++); install one or use --compile off")
            return False
        return True


def _use_persistent_compile_cache() -> None:
    """Keep compiled kernels in the user cache so later runs skip most of the compile time."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))


def denoise_volume(
    hu: np.ndarray,
    model: LoadedModel,
    options: EngineOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    header_kernel: str | None = None,
) -> np.ndarray:
    """One-call form of :class:`VolumeDenoiser` for scripts."""
    return VolumeDenoiser(model, options)(hu, progress=progress, cancel=cancel, header_kernel=header_kernel)
