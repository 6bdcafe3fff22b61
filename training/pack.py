"""A training subset packed to travel: int16 HU arrays a machine without DICOM readers can train on.

A lent GPU machine takes the working tree and at most 64 MiB in all, and cannot reach this
project's data or install SimpleITK. ``ldct-train pack`` writes the training and validation
patients of a config as one ``.npz`` each (HU as int16, cropped to the body's bounding box plus a
margin, with the geometry) and a manifest ``pack.csv`` that keeps every patient's subject and
split. Slices are thinned evenly per series until the pack fits its budget. A config whose
``data.dataset`` is that manifest trains from the arrays alone (``SeriesCache`` reads ``.npz``).
"""

from __future__ import annotations

import csv
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.atomic import atomic_folder
from LDCTDenoiseLib.errors import InputError, OutputError

from .config import TrainConfig
from .data import dataset_split
from .volumes import SeriesCache, evenly_spaced

PACK_MANIFEST = "pack.csv"
DEVICE_TREE_LIMIT_MIB = 64.0  # what travels to a lent GPU machine: the working tree, carried paths included
BODY_HU = -500.0
MARGIN_PX = 16
MIB = 2**20


@dataclass(frozen=True)
class PackedSeries:
    name: str
    subject: str
    split: str
    slices: int
    shape: tuple[int, int]
    nbytes: int


def pack_dataset(config: TrainConfig, out: Path, budget_mib: float, cache: SeriesCache,
                 splits: tuple[str, ...] = ("train", "validation")) -> list[PackedSeries]:
    """Write the config's ``splits`` into ``out`` (a new folder) within ``budget_mib``; what was packed.

    Every series keeps at least one slice; the rest are thinned by one factor for all series
    until the compressed arrays fit.
    """
    if config.data.dataset is None:
        raise InputError("no dataset to pack: set data.dataset in the config or pass --set data.dataset=PATH")
    if out.exists():
        raise OutputError(f"{out} exists; packs are written into a new folder (remove it or name another)")
    data = config.data
    patients = dataset_split(data)
    chosen = [(split, patient) for split in splits for patient in patients[split]]
    arrays = {patient.name: _body_crop(cache.ndct(patient), data.crop) for _, patient in chosen}
    total_slices = sum(a["hu"].shape[0] for a in arrays.values())
    fraction = 1.0
    while True:
        thinned = {name: _thinned(a, fraction) for name, a in arrays.items()}
        encoded = {name: _encoded(a) for name, a in thinned.items()}
        size = sum(len(blob) for blob in encoded.values())
        if size <= budget_mib * MIB or all(a["hu"].shape[0] == 1 for a in thinned.values()):
            break
        fraction *= 0.9 * budget_mib * MIB / size
    if size > budget_mib * MIB:
        raise OutputError(f"even one slice per series needs {size / MIB:.1f} MiB, over the budget of "
                          f"{budget_mib:.1f} MiB; pack fewer series or give a larger --budget-mib")
    packed = []
    with atomic_folder(out) as tmp:
        for name, blob in encoded.items():
            (tmp / f"{name}.npz").write_bytes(blob)
        with (tmp / PACK_MANIFEST).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["patient", "subject", "ndct", "split"])
            for split, patient in chosen:
                writer.writerow([patient.name, patient.person, f"{patient.name}.npz", split])
                hu = thinned[patient.name]["hu"]
                packed.append(PackedSeries(patient.name, patient.person, split, hu.shape[0], hu.shape[1:],
                                           len(encoded[patient.name])))
    if sum(p.slices for p in packed) < total_slices:
        print(f"ldct-train pack: kept {sum(p.slices for p in packed)} of {total_slices} slices to fit "
              f"{budget_mib:.1f} MiB")
    return packed


def travelling_mib(repository: Path) -> float:
    """MiB of the files that go to a lent device: tracked and untracked files git does not ignore."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=repository, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise InputError(f"{repository} is not a git checkout; give --budget-mib explicitly") from None
    files = (repository / name for name in listing.decode().split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file()) / MIB


def _body_crop(series, crop: int) -> dict[str, np.ndarray]:
    """The series' slices cropped to the rows and columns the body touches on any slice, plus a margin."""
    hu = np.asarray(series.hu)
    body = (hu > BODY_HU).any(axis=0)
    rows, columns = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        rows, columns = np.arange(hu.shape[1]), np.arange(hu.shape[2])
    top, bottom = _span(rows, hu.shape[1], crop)
    left, right = _span(columns, hu.shape[2], crop)
    direction = np.asarray(series.direction, dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(series.spacing, dtype=np.float64)
    origin = np.asarray(series.origin, dtype=np.float64) + direction @ (np.array([left, top, 0]) * spacing)
    voxels = np.clip(np.rint(hu[:, top:bottom, left:right]), -32768, 32767).astype(np.int16)
    return {"hu": voxels, "spacing": spacing, "origin": origin, "direction": direction.ravel()}


def _span(indices: np.ndarray, size: int, crop: int) -> tuple[int, int]:
    low, high = max(0, int(indices[0]) - MARGIN_PX), min(size, int(indices[-1]) + 1 + MARGIN_PX)
    missing = max(0, min(crop, size) - (high - low))  # at least one training crop fits
    low = max(0, low - missing // 2 - missing % 2)
    return low, min(size, max(high + missing // 2, low + min(crop, size)))


def _thinned(arrays: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """Every n-th slice or so; training draws slices as independent 2-D samples, so the z spacing stays."""
    slices = arrays["hu"].shape[0]
    keep = evenly_spaced(slices, max(1, int(round(slices * fraction))) if fraction < 1 else 0)
    return {**arrays, "hu": arrays["hu"][keep]}


def _encoded(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
