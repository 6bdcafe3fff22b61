"""The exported graph run by OpenVINO on the CPU, compiled once per slice size, in a chosen precision.

The engine's default on the CPU: the fastest accurate path on every CPU measured (fp32 5-11 % ahead of
ONNX Runtime with 0.4 GiB less memory; mixed 2.8-4x eager torch where the CPU has native bf16).

OpenVINO plans a static shape best (``benchmarks/cpu_runtimes.py`` measures it beside ONNX Runtime),
so each (batch, rows, columns) a volume brings is compiled once and kept; a volume's slices all share
one size, so a volume costs one compilation. The graphs are ``onnx_runtime``'s: exported from the same
safetensors into the user cache and checked against their checksums before every use.

Precision is always set, never left to OpenVINO: on a CPU with native bf16 (AVX512-BF16, AMX) its
default is bf16, which is 3.5 HU off fp32 at the 99th percentile on real slices. "mixed" runs the
generator's full-resolution levels in fp32 and the levels below in bf16 (0.7 HU, at about 1.5x the
speed of fp32 there): the full-resolution features carry HU as small differences on a large offset,
which bf16's 8-bit mantissa rounds away; the inner levels' features do not.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from ..errors import InputError, WeightsError
from ..models.weights import LoadedModel
from ..networks.hu2024 import Generator
from . import onnx_runtime

PRECISIONS = ("fp32", "bf16", "mixed")
_HINTS = {"fp32": "f32", "bf16": "bf16"}
# mixed: each part in its own precision, run in this order (each takes its inputs by onnx_runtime.PARTS's names)
_MIXED = (("first_level", "fp32"), ("inner_levels", "bf16"), ("last_level", "fp32"))


def available() -> bool:
    """OpenVINO can run here, and the graph can be exported (onnx)."""
    return importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnx") is not None


# "0": behave as on a CPU without native bf16 (auto stays fp32); read at each call, so child processes
# (the Slicer module's) and tests see what their environment says
NATIVE_BF16_VARIABLE = "LDCTDENOISE_NATIVE_BF16"


def native_bf16() -> bool:
    """This CPU computes bf16 in hardware and the environment does not turn that off."""
    return os.environ.get(NATIVE_BF16_VARIABLE, "") != "0" and _hardware_bf16()


@functools.cache  # the CPU does not change while a process runs; each query starts an OpenVINO core
def _hardware_bf16() -> bool:
    """OpenVINO's own default precision on this CPU is bf16."""
    import openvino

    return openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") == openvino.Type.bf16


def splits(model: LoadedModel) -> bool:
    """The network has the levels the mixed precision keeps apart (the paper's generator)."""
    return isinstance(model.generator, Generator)


def auto_precision(model: LoadedModel) -> str:
    """mixed where it pays (native bf16, a generator with levels to split), else fp32."""
    return "mixed" if splits(model) and native_bf16() else "fp32"


class OpenVinoCorrection(onnx_runtime.GraphCorrection):
    """The network's correction through OpenVINO, compiled for each padded input shape it meets."""

    name = "openvino"

    def __init__(self, model: LoadedModel, precision: str = "fp32", threads: int | None = None) -> None:
        import openvino

        if precision not in PRECISIONS:
            raise InputError(f"OpenVINO runs {', '.join(PRECISIONS)}; got {precision!r}")
        if precision != "fp32" and not native_bf16():
            raise InputError(f"--precision {precision} needs a CPU with native bf16 (AVX512-BF16 or AMX); "
                             "this one has none: use --precision fp32")
        if precision == "mixed" and not splits(model):
            raise InputError(f"--precision mixed needs the attention residual U-Net; {model.name!r} is a "
                             f"{type(model.generator).__name__}: use --precision fp32 or bf16")
        self.precision = precision
        self.multiple = model.generator.size_multiple
        self.core = openvino.Core()
        self.threads = threads or onnx_runtime.cpu_count()
        parts = _MIXED if precision == "mixed" else (("correction", precision),)
        self.parts = [(part, part_precision, onnx_runtime.verified_graph(model, part))
                      for part, part_precision in parts]
        self.compiled: dict[tuple, object] = {}

    def _run(self, x: np.ndarray) -> np.ndarray:
        values = {"x": x}
        for index, (part, _, _) in enumerate(self.parts):
            inputs, output = onnx_runtime.PARTS[part]
            arrays = [values[name] for name in inputs]
            values[output] = self._compiled_for(index, tuple(a.shape for a in arrays))(arrays)[0]
        return values["correction"]

    def _compiled_for(self, index: int, shapes: tuple[tuple[int, ...], ...]):
        part, precision, path = self.parts[index]
        key = (part, shapes)
        if key not in self.compiled:
            try:
                graph = self.core.read_model(str(path))
                graph.reshape({port.get_any_name(): list(shape) for port, shape in zip(graph.inputs, shapes)})
                self.compiled[key] = self.core.compile_model(graph, "CPU", {
                    "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_PRECISION_HINT": _HINTS[precision]})
            except Exception as error:  # a graph this OpenVINO cannot compile
                raise WeightsError(f"OpenVINO cannot compile {path} for {shapes} ({type(error).__name__}); "
                                   "use --runtime onnxruntime or torch") from None
        return self.compiled[key]
