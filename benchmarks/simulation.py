"""How fast the scanner-noise simulator feeds training: samples/s for training crops and whole slices.

python benchmarks/simulation.py [--series ../shared/data/ct/thorax-141] [--samples 12] [--threads 1]

Times ``Stage1Crops`` with scanner noise (128-pixel crops, every parameter drawn, augmentations on)
as a DataLoader worker runs it: the first crop of a slice pays for its projection, later crops of
the same slice reuse it (``cold`` and ``warm`` below); and whole-slice noise as the evaluation
uses it, at 360 and 1200 views. Prints one table (markdown).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.simulation import ScannerNoise, scanner_noise_hu
from training.config import DataConfig, NoiseConfig
from training.sampling import CropSpec, SlicePair, Stage1Crops

DEFAULT_SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "thorax-141"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker has 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = read_volume(args.series)
    print(f"{args.series.name}: {volume.array.shape}, {volume.spacing[0]:.3f} mm pixels, {args.threads} thread(s)\n")
    print("| what | s/sample | samples/s |\n|---|---|---|")
    pair = SlicePair(volume.array, pixel_mm=volume.spacing[0])
    augment = DataConfig(flips=True, rot90=True, pixel_scale=[0.75, 1.33])
    crops = CropSpec(128, seed=0, normalization=Normalization())
    cold = Stage1Crops([pair], crops, NoiseConfig(kind="scanner"), augment)
    _row("training crop 128, every draw, new slice (cold)", _timed(lambda i: cold[i], args.samples))
    one_slice = SlicePair(volume.array[70:71], pixel_mm=volume.spacing[0])
    warm = Stage1Crops([one_slice], crops, NoiseConfig(kind="scanner"), augment)
    warm[0]
    _row("training crop 128, every draw, slice seen before (warm)", _timed(lambda i: warm[i + 1], args.samples))
    hu = np.asarray(volume.array[70])
    for views in (360, 1200):
        settings = ScannerNoise(added_noise_hu=40.0, views=views)
        seconds = _timed(lambda i, s=settings: scanner_noise_hu(hu, volume.spacing[0], s, np.random.default_rng(i)),
                         max(2, args.samples // 4))
        _row(f"whole 512 x 512 slice, {views} views", seconds)


def _timed(work, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        work(index)
    return (time.perf_counter() - start) / count


def _row(what: str, seconds: float) -> None:
    print(f"| {what} | {seconds:.3f} | {1 / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
