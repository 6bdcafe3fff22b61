"""The same exported correction graph run by OpenVINO on the CPU, compiled once per slice size.

OpenVINO plans a static shape best (``benchmarks/cpu_runtimes.py`` measures it beside ONNX Runtime),
so each (batch, rows, columns) a volume brings is compiled once and kept; a volume's slices all share
one size, so a volume costs one compilation. The graph is ``onnx_runtime``'s: exported from the same
safetensors into the user cache and checked against its checksum before every use.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from . import onnx_runtime
from .errors import WeightsError
from .weights import LoadedModel


def available() -> bool:
    """OpenVINO can run here, and the graph can be exported (onnx)."""
    return importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnx") is not None


class OpenVinoCorrection(onnx_runtime.GraphCorrection):
    """The network's correction through OpenVINO, compiled for each padded input shape it meets."""

    name = "openvino"

    def __init__(self, model: LoadedModel, threads: int | None = None) -> None:
        import openvino

        self.multiple = model.generator.size_multiple
        self.core = openvino.Core()
        self.config = {"INFERENCE_NUM_THREADS": threads or onnx_runtime.cpu_count(), "PERFORMANCE_HINT": "LATENCY"}
        self.path = onnx_runtime.verified_graph(model)
        self.compiled: dict[tuple[int, ...], object] = {}

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._compiled_for(x.shape)([x])[0]

    def _compiled_for(self, shape: tuple[int, ...]):
        if shape not in self.compiled:
            try:
                graph = self.core.read_model(str(self.path))
                graph.reshape(list(shape))
                self.compiled[shape] = self.core.compile_model(graph, "CPU", self.config)
            except Exception as error:  # a graph this OpenVINO cannot compile
                raise WeightsError(f"OpenVINO cannot compile {self.path} for {shape} ({type(error).__name__}); "
                                   "use --runtime onnxruntime or torch") from None
        return self.compiled[shape]
