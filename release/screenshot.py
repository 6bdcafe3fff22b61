"""The extension's catalog image: what the module produces on one held-out slice (not a Slicer screenshot).

    python release/screenshot.py [--data ../shared/data] [--out Resources/Screenshots/LDCTDenoise.png]

Input (simulated 80 HU low-dose scan of LIDC-IDRI-0003, a held-out subject, or the procedural phantom
when the data folder is absent), the bundled model's output, their difference, and the HU density
curves of a soft-tissue box against the normal dose, as the module's Compare section draws them.
The extension index shows it until a screenshot of the module in Slicer replaces it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from LDCTDenoiseLib.compare.density import hu_densities  # noqa: E402
from LDCTDenoiseLib.engine.inference import VolumeDenoiser  # noqa: E402
from LDCTDenoiseLib.engine.options import EngineOptions  # noqa: E402
from LDCTDenoiseLib.io import Volume, read_volume  # noqa: E402
from LDCTDenoiseLib.models.weights import find_model  # noqa: E402
from LDCTDenoiseLib.simulation import ScannerNoise, make_phantom, simulate_low_dose  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
SERIES, SLICE = "ct/lidc-idri/LIDC-IDRI-0003", 5
WINDOW = (-160.0, 240.0)  # soft tissue, HU
NOISE = ScannerNoise(80.0, filter="ramp", views=720, bowtie=1.0, modulation=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "Resources" / "Screenshots" / "LDCTDenoise.png")
    args = parser.parse_args(argv)
    ndct, source = normal_dose(args.data)
    ldct = simulate_low_dose(ndct, NOISE, seed=1).array[0]
    denoised = VolumeDenoiser(find_model(None), EngineOptions(device="cpu"))(ldct[None])[0]
    box = soft_tissue_box(ndct.array[0])
    curves = hu_densities({"NDCT": ndct.array[0][box], "LDCT": ldct[box], "Denoised": denoised[box]}, "NDCT")
    draw(ldct, denoised, box, curves, source, args.out)
    print(f"wrote {args.out.relative_to(REPOSITORY) if args.out.is_relative_to(REPOSITORY) else args.out}")
    return 0


def normal_dose(data: Path) -> tuple[Volume, str]:
    folder = data / SERIES
    if folder.is_dir():
        volume = read_volume(folder)
        one = Volume(np.ascontiguousarray(volume.array[SLICE:SLICE + 1]), volume.spacing, volume.origin,
                     volume.direction)
        return one, f"{Path(SERIES).name}, slice {SLICE}"
    return make_phantom((1, 384, 384), seed=1), "procedural phantom (../shared/data absent)"


def soft_tissue_box(hu: np.ndarray) -> tuple[slice, slice]:
    """The 32 x 32 box of the slice whose HU are closest to flat soft tissue (mean 0-100 HU, least spread)."""
    best, where = np.inf, (slice(0, 32), slice(0, 32))
    for r in range(0, hu.shape[0] - 32, 16):
        for c in range(0, hu.shape[1] - 32, 16):
            patch = hu[r:r + 32, c:c + 32]
            if 0 < patch.mean() < 100 and patch.std() < best:
                best, where = patch.std(), (slice(r, r + 32), slice(c, c + 32))
    return where


def draw(ldct: np.ndarray, denoised: np.ndarray, box, curves, source: str, out: Path) -> None:
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.25]})
    titles = ("Low-dose input (80 HU added)", "Denoised")
    for axis, image, title in zip(axes[:2], (ldct, denoised), titles, strict=True):
        axis.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
        axis.set_title(title)
    axes[2].imshow(ldct - denoised, cmap="gray", vmin=-150, vmax=150)
    axes[2].set_title("Removed (input - denoised)")
    for axis in axes[:3]:
        axis.add_patch(plt.Rectangle((box[1].start, box[0].start), 32, 32, fill=False, color="yellow", lw=1.5))
        axis.axis("off")
    for curve in curves.curves:
        axes[3].plot(curve.hu, curve.density, label=f"{curve.name}: {curve.mean:.0f} +/- {curve.std:.0f} HU")
    axes[3].set_xlim(-150, 250)
    axes[3].set_xlabel("HU")
    axes[3].set_ylabel("density")
    axes[3].set_title("HU density in the yellow box")
    axes[3].legend(fontsize=9)
    figure.suptitle(f"LDCTDenoise: {source} (not a Slicer screenshot; made by release/screenshot.py)", fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
