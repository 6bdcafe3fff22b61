"""The denoising engine: a model run over a whole volume, on the best device and runtime.

``inference`` (slices in batches, progress, cancel), the graph runtimes (``onnx_runtime``,
``openvino_runtime``), ``noise_level`` (keep-noise: the share of the correction a slice gets),
``self_ensemble`` (mirrored views), ``adaptation`` (self-supervised fine-tuning on the scan itself) and
``options`` (``EngineOptions``: every setting of a run, one type for every front end). ``options``
imports neither torch nor numpy, so the Slicer module can validate settings before torch exists.
May import ``models``, ``networks``, ``io``, ``errors``; never ``slicer``, ``compare`` or the CLI.
"""
