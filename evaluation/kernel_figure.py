"""StructKPN's per-pixel kernels on a held-out slice: where it smooths wide, where it follows an edge.

``python -m evaluation.kernel_figure [--model Resources/Models/structkpn] [--out docs/methods]``.
The slice is the sweep's held-out thorax-141 heart slice with 80 HU of sharp-filter scanner noise; the
three pixels shown are where the structure-aware loss weights flat tissue (L2), an edge (L1) and
texture (SSIM) most, so the figure reads beside the loss that trained the kernels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.io import read_volume
from LDCTDenoiseLib.models.weights import load_model
from LDCTDenoiseLib.simulation.scanner import ScannerNoise, scanner_noise_hu
from training.methods.structkpn.loss import structure_weights

from .figures import _pyplot

REPOSITORY = Path(__file__).resolve().parents[1]
SERIES, INDEX = "ct/thorax-141", 70
SCAN = ScannerNoise(added_noise_hu=80.0, filter="ramp", cutoff=1.0, views=984, electronic_std=30.0, bowtie=3.0,
                    modulation=0.0)


def kernel_figure(model: Path, data: Path, out: Path) -> Path:
    model = load_model(model)
    volume = read_volume(data / SERIES)
    clean = np.asarray(volume.array[INDEX], np.float32)
    noisy = clean + scanner_noise_hu(clean, volume.spacing[0], SCAN, np.random.default_rng(2026))
    norm = model.normalization
    with torch.no_grad():
        x = torch.from_numpy(norm.to_network(noisy[None]))[None]
        kernels = model.generator.kernels(x)[0].numpy()
        denoised = noisy + model.generator.residual(x)[0, 0].numpy() * norm.scale
        weights = [w[0, 0].numpy() for w in structure_weights(torch.from_numpy(norm.to_network(clean[None]))[None])]
    body = clean > -700
    size = model.generator.config.kernel_size
    points = {name: np.unravel_index(np.argmax(np.where(body, w, -1)), clean.shape)
              for name, w in zip(("flat (L2)", "texture (SSIM)", "edge (L1)"), weights, strict=True)}
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2 + len(points), figsize=(4 * 2 + 2.2 * len(points), 4.2), dpi=110)
    for axis, image, title in ((axes[0], noisy, "input (80 HU added, sharp)"), (axes[1], denoised, "StructKPN")):
        axis.imshow(image, cmap="gray", vmin=-160, vmax=240)
        axis.set_title(title)
        axis.axis("off")
    for axis, (name, (row, column)) in zip(axes[2:], points.items(), strict=True):
        axes[0].plot(column, row, "o", mfc="none", mec="yellow", ms=10)
        axes[0].annotate(name, (column, row), color="yellow", fontsize=8, xytext=(6, 6), textcoords="offset points")
        axis.imshow(kernels[:, row, column].reshape(size, size), cmap="viridis")
        axis.set_title(f"{name}\nkernel at ({row}, {column})", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"StructKPN per-pixel {size}x{size} kernels, thorax-141 slice {INDEX} (held out, Philips)")
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "structkpn-kernels.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPOSITORY / "Resources" / "Models" / "structkpn")
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "methods")
    print(kernel_figure(**vars(parser.parse_args())))


if __name__ == "__main__":
    main()
