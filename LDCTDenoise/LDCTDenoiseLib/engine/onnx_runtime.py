"""The generator's correction as an ONNX graph (what OpenVINO, the CPU default, compiles), and ONNX
Runtime running it: the fallback where OpenVINO cannot.

Chosen by measurement (``benchmarks/cpu_runtimes.py``, figures in ``benchmarks/RESULTS.md``). The
graph is exported from the same safetensors at first use and cached in the user cache folder,
keyed by the weights' SHA-256, with a checksum file beside it: a cached graph that fails its
checksum is rebuilt, never run. Nothing is downloaded.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomically
from ..errors import WeightsError
from ..models.weights import LoadedModel, cache_dir, sha256_of

GRAPH_VERSION = 1  # part of the cache key: raise it when the exported graph changes
OPSET = 17
logger = logging.getLogger(__name__)


def available() -> bool:
    """ONNX Runtime can run here, and onnx is there to export the graph (torch's exporter needs it)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


# The graphs a runtime can ask for: the whole correction, or the generator's three levels apart (its
# inputs -> output), for a runtime that runs them in different precisions (openvino_runtime).
PARTS = {
    "correction": (("x",), "correction"),
    "first_level": (("x",), "first"),
    "inner_levels": (("first",), "inner"),
    "last_level": (("inner", "first"), "correction"),
}


def graph_path(model: LoadedModel, part: str = "correction") -> Path:
    """Where a graph of these weights is cached: keyed by the weights file's SHA-256 in the user cache.

    Weights with no file (an adapted copy, made per scan) are keyed by their tensors in a folder of
    this process that goes with it, so per-scan graphs do not pile up in the cache.
    """
    key, folder = model.manifest.get("sha256"), cache_dir() / "onnx"
    if key is None:
        key, folder = _tensors_sha256(model.generator), _process_graphs(folder)
    suffix = "" if part == "correction" else f"-{part}"
    return folder / f"{key[:32]}-v{GRAPH_VERSION}{suffix}.onnx"


@functools.cache
def _process_graphs(cache: Path) -> Path:
    """A folder in the graph cache for this process only, removed when it exits."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"process-{os.getpid()}-", dir=cache))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _tensors_sha256(network: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def verified_graph(model: LoadedModel, part: str = "correction") -> Path:
    """The cached graph of ``model``, exported now if missing, rebuilt if it fails its checksum."""
    path = graph_path(model, part)
    checksum = path.with_suffix(".sha256")
    if path.is_file() and checksum.is_file() and sha256_of(path) == checksum.read_text().strip():
        return path
    if path.exists():
        logger.warning("the cached ONNX graph %s fails its checksum; exporting it again", path)
    export_graph(model, path, part)
    write_atomically(checksum, lambda tmp: tmp.write_text(sha256_of(path) + "\n"))
    return path


def export_graph(model: LoadedModel, path: Path, part: str = "correction") -> None:
    """A part of the network (PARTS) for (batch, channels, H, W) inputs, H and W multiples of the network's.

    "correction" is ``residual(x)``; the others are the generator's ``first_level``, ``inner_levels``
    and ``last_level`` (``model.Generator``), which chain to the same correction.
    """
    generator = model.generator.eval()
    side = 2 * generator.size_multiple
    inputs, output = PARTS[part]
    x = torch.zeros(1, 1, side, side)
    examples: tuple[torch.Tensor, ...] = (x,)
    if part in ("inner_levels", "last_level"):
        with torch.no_grad():
            first = generator.first_level(x)
            examples = (first,) if part == "inner_levels" else (generator.inner_levels(first), first)
    network = _Part(generator, "residual" if part == "correction" else part)
    path.parent.mkdir(parents=True, exist_ok=True)

    # torch >= 2.5 has two exporters; the TorchScript one handles this graph with no extra package
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    sizes = {0: "batch", 2: "rows", 3: "columns"}

    def export(tmp: Path) -> None:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's business
            torch.onnx.export(network, examples, str(tmp), input_names=list(inputs), output_names=[output],
                              opset_version=OPSET, dynamic_axes={name: sizes for name in (*inputs, output)},
                              **legacy)

    write_atomically(path, export)


class GraphCorrection:
    """The exported graph's correction on numpy batches of any H x W: padded (replicate) to the network's
    size multiple, run by a subclass's ``_run``, cropped back. ``name`` and ``precision`` are the runtime's
    and what it computes in, for the engine."""

    name: str
    precision: str
    multiple: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Correction of (batch, 1, H, W) normalised slices."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        return np.asarray(self._run(np.ascontiguousarray(x, dtype=np.float32)))[..., :height, :width]

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxCorrection(GraphCorrection):
    """The network's correction through an ONNX Runtime session (CPU)."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: LoadedModel, threads: int | None = None) -> None:
        import onnxruntime

        self.multiple = model.generator.size_multiple
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or cpu_count()
        options.log_severity_level = 3
        path = verified_graph(model)
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # a graph this ONNX Runtime cannot load
            raise WeightsError(f"ONNX Runtime cannot load {path} ({type(error).__name__}); "
                               "use --runtime torch, or delete that file to export it again") from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        (correction,) = self.session.run(None, {"x": x})
        return correction


class _Part(torch.nn.Module):
    """One method of the generator as a module of its own, so the exported graph holds only that part."""

    def __init__(self, generator: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.generator = generator
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.generator, self.method)(*inputs)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
