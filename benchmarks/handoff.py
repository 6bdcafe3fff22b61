"""What the Slicer module's GUI thread spends handing a volume to the denoising child and taking the result back.

Before (up to commit 03b587a): the input written as a gzip-compressed NRRD and read back to verify
it (``io.write_volume_file``), the result read from a gzip NRRD (``io.read_volume_file``). After:
``io.handoff``, a raw ``.npy`` and a small JSON each way. The volume is float32 (what
``slicer.mrml_bridge.volume_from_node`` hands over) of 512 x 512 slices; the child's side is not
timed (it runs outside the GUI thread). ``arrayFromVolume`` and ``updateVolumeFromArray`` (a copy
each, the same before and after) need Slicer and are not in these figures.
``python benchmarks/handoff.py [--slices 300 600]``; run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LDCTDenoise"))

from LDCTDenoiseLib.io import Volume, read_volume_file, write_volume_file  # noqa: E402
from LDCTDenoiseLib.io.handoff import read_handoff, write_handoff  # noqa: E402


def ct_like(slices: int) -> Volume:
    """Body-like HU with noise, so gzip meets realistic entropy (a constant volume would flatter it)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    body = np.where(np.hypot(yy - 256, (xx - 256) * 0.75) < 200, 40.0, -1000.0).astype(np.float32)
    array = np.empty((slices, 512, 512), np.float32)
    for k in range(slices):
        array[k] = body + rng.normal(0, 20, body.shape).astype(np.float32)
    return Volume(array, (0.7, 0.7, 1.0))


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[300, 600])
    args = parser.parse_args()
    print("| slices | hand-off | write input (s) | read result (s) | GUI thread total (s) | files (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for slices in args.slices:
        volume = ct_like(slices)
        with tempfile.TemporaryDirectory() as folder:
            for name, path, write, read in (
                    ("gzip NRRD + read-back (before)", Path(folder) / "v.nrrd", write_volume_file, read_volume_file),
                    ("raw .npy + JSON (after)", Path(folder) / "v.npy", write_handoff, read_handoff)):
                written = timed(lambda: write(volume, path))  # noqa: B023 - called at once
                size = sum(p.stat().st_size for p in Path(folder).glob("v.*")) / 1e6
                read = timed(lambda: np.asarray(read(path).array).sum())  # noqa: B023 - touch every voxel
                print(f"| {slices} | {name} | {written:.2f} | {read:.2f} | {written + read:.2f} | {size:.0f} |",
                      flush=True)
                for leftover in Path(folder).glob("v.*"):
                    leftover.unlink()


if __name__ == "__main__":
    main()
