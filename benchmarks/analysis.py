"""Speed of the region analysis: masks, region metrics and HU densities on a full-size CT grid.

The issue's target: densities of a 100k-voxel region in <= 1 s. Timings are printed, never asserted.

    python benchmarks/analysis.py [--ct ../shared/data/ct/thorax-141]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.compare.comparison import compare_in_region
from LDCTDenoiseLib.compare.density import hu_densities
from LDCTDenoiseLib.compare.roi import Box, box_mask, hu_range_mask
from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.simulation import make_phantom

DEFAULT_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct" / "thorax-141"


def timed(label: str, work, repeats: int = 3):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    print(f"| {label} | {best:.3f} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    args = parser.parse_args()
    volume = read_volume(args.ct) if args.ct.exists() else make_phantom((141, 512, 512))
    rng = np.random.default_rng(0)
    methods = {name: volume.array + rng.normal(0, s, volume.array.shape).astype(np.float32)
               for name, s in (("LDCT", 30.0), ("Denoised", 10.0), ("Gaussian", 15.0))}
    centre = volume.index_to_world([np.asarray(volume.array.shape[::-1]) / 2])[0]
    source = args.ct if args.ct.exists() else "phantom"
    print(f"{source}: {volume.array.shape}, {platform.processor() or platform.machine()}")
    print("| step | best of 3, s |\n|---|---|")
    box = Box.from_center_size(centre, (80.0, 80.0, 30.0))  # ~100k voxels at 0.98 x 0.98 x 2 mm
    mask = timed("world-box mask on the whole grid", lambda: box_mask(volume, box))
    print(f"| (box region: {mask.sum()} voxels) | |")
    timed("HU-range mask inside the body (-100..100 HU)", lambda: hu_range_mask(volume, -100, 100), repeats=1)
    samples = {"NDCT": volume.array[mask], **{n: v[mask] for n, v in methods.items()}}
    timed("densities, 4 curves of the 100k-voxel region", lambda: hu_densities(samples, reference="NDCT"))
    timed("PSNR/SSIM/RMSE, 3 volumes x 2 windows, same region",
          lambda: compare_in_region(methods, volume.array, mask), repeats=1)


if __name__ == "__main__":
    main()
