"""A volume handed between two processes as a raw array file: no compression, no read-back.

Slicer's GUI thread writes the input for the denoising child and reads its result. As a gzip NRRD
with a read-back check that cost it seconds per 300 slices each way, and Slicer froze meanwhile
(``benchmarks/handoff.py``). Here the voxels go into ``NAME.npy`` as they are (``numpy.save``
raises on a short write, unlike ITK's writer, so nothing needs reading back) and the geometry and
header into ``NAME.json``; the reader takes the array from the page cache. The files live in a run's
private folder and go with it (the JSON also carries the series' ConvolutionKernel: the worker's keep-noise
follows it); the ``.npy`` is written last, under a temporary name, so its presence
marks a complete hand-off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import InputError, OutputError
from .volume import Volume

SUFFIX = ".npy"


def write_handoff(volume: Volume, path: str | Path) -> Path:
    """``volume`` as ``path`` (``.npy``) and its geometry beside it (``.json``); returns the array file."""
    path = Path(path)
    if path.suffix != SUFFIX:
        raise OutputError(f"{path}: a hand-off file ends in {SUFFIX}")
    described = {"spacing": list(volume.spacing), "origin": list(volume.origin),
                 "direction": [float(v) for v in np.asarray(volume.direction).ravel()],
                 "header": {key: str(value) for key, value in volume.metadata.get("header", {}).items()},
                 "convolution_kernel": volume.metadata.get("convolution_kernel")}
    try:
        with atomic_file(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(described))
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(volume.array))
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}; is the disk full? Nothing was kept") \
            from None
    return path


def read_handoff(path: str | Path, mapped: bool = False) -> Volume:
    """The volume ``write_handoff`` wrote; ``mapped``: its array memory-mapped, read-only (the file must stay)."""
    path = Path(path)
    try:
        described = json.loads(path.with_suffix(".json").read_text())
        array = np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the hand-off {path}: {error}") from None
    return Volume(array, tuple(described["spacing"]), tuple(described["origin"]),
                  np.asarray(described["direction"]).reshape(3, 3),
                  metadata={"source": path.name, "source_format": "handoff", "header": described["header"],
                            "convolution_kernel": described.get("convolution_kernel")})


def is_handoff(path: str | Path) -> bool:
    return Path(path).suffix == SUFFIX
