"""The real-noise texture the base model trains on, beside the simulator's: noise power spectra.

``python -m evaluation.noise_texture [--data ../shared/data] [--out docs/evaluation/noise-texture]``

1. *Which extraction is cleaner*, where the truth is known: a phantom series (anatomy that changes
   from slice to slice, 6 HU of per-slice tissue texture) with independent scanner noise of one
   recipe on every slice. Each estimator runs on the noisy series; the truth is the same noise
   without the anatomy. Compared: the shape of the radial spectrum (relative error) and the level.
2. *The training series' real noise* (the difference estimator, what ``noise.real_texture``
   trains on) beside the simulator's five filters on a training slice, each as a radial spectrum
   of unit area over cycles per pixel.
Writes ``nps.png`` and ``README.md`` into ``--out``; no absolute path of this machine in either.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.simulation import make_phantom
from LDCTDenoiseLib.simulation.scanner import FILTERS, ScannerNoise, scanner_noise_hu
from training.config import load_config
from training.data import dataset_split
from training.real_noise import (
    MAX_LAG,
    Texture,
    difference_autocorrelation,
    masked_autocorrelation,
    residual_autocorrelation,
    soft_tissue,
    textures,
)
from training.sampling import SlicePair
from training.volumes import SeriesCache, training_volumes

from .figures import _pyplot
from .report import _commit

REPOSITORY = Path(__file__).resolve().parents[1]
GRID = 128  # spectra on a 128-pixel grid: 64 radial bins up to Nyquist
KNOWN = ScannerNoise(added_noise_hu=30.0, filter="shepp-logan", cutoff=0.9, views=720, electronic_std=10.0,
                     bowtie=1.0, modulation=0.5)
SIMULATOR_SLICE = ("LungFCP-01-0001", 50)  # a training slice the simulator's spectra are drawn on


def radial(texture_autocorrelation: np.ndarray) -> np.ndarray:
    """Radial average of the spectrum of a unit-variance autocorrelation, normalised to unit area."""
    power = np.fft.fftshift(Texture("", texture_autocorrelation, 0.0, 0).spectrum(GRID))
    yy, xx = np.indices(power.shape) - GRID // 2
    ring = np.hypot(yy, xx).round().astype(int)
    profile = np.bincount(ring.ravel(), power.ravel())[: GRID // 2] / np.bincount(ring.ravel())[: GRID // 2]
    return profile / profile.sum()


def unit(autocorrelation: np.ndarray) -> np.ndarray:
    return autocorrelation / autocorrelation[MAX_LAG, MAX_LAG]


def known_noise_comparison(seed: int = 2026) -> dict:
    """Both estimators against the truth on a phantom with independent known noise per slice."""
    phantom = make_phantom((12, 256, 256), seed=seed)
    rng = np.random.default_rng(seed)
    noise = np.stack([scanner_noise_hu(image, phantom.spacing[0], KNOWN, rng) for image in phantom.array])
    noisy = phantom.array + noise
    truth, _ = masked_autocorrelation([(n, soft_tissue(a)) for n, a in zip(noise, phantom.array, strict=True)],
                                      MAX_LAG)
    estimates = {"neighbour difference (used)": difference_autocorrelation(noisy, 1),
                 "neighbour difference, not detrended": difference_autocorrelation(noisy, 1, detrend_px=0),
                 "flat-region residual": residual_autocorrelation(noisy)}
    true_shape = radial(unit(truth))
    rows = {"truth": {"noise_hu": float(np.sqrt(truth[MAX_LAG, MAX_LAG])), "shape_error": 0.0, "profile": true_shape}}
    for name, (autocorrelation, _) in estimates.items():
        shape = radial(unit(autocorrelation))
        rows[name] = {"noise_hu": float(np.sqrt(autocorrelation[MAX_LAG, MAX_LAG])),
                      "shape_error": float(np.abs(shape - true_shape).sum() / true_shape.sum()), "profile": shape}
    return rows


def training_textures() -> tuple[list[Texture], list[str], list]:
    config = load_config("cpu-scanner-mse")
    data = config.data
    volumes = training_volumes(config, dataset_split(data)["train"], SeriesCache(data.cache, quiet=True))
    notes: list[str] = []
    return textures(volumes, notes), notes, volumes


def simulator_profiles(volumes: list[SlicePair]) -> dict[str, np.ndarray]:
    """The simulator's noise on one training slice, one filter each (other settings fixed), as radial spectra."""
    volume = next(v for v in volumes if v.name == SIMULATOR_SLICE[0])
    image = np.asarray(volume.ndct[SIMULATOR_SLICE[1]], np.float32)
    profiles = {}
    for name in FILTERS:
        settings = ScannerNoise(**{**KNOWN.to_dict(), "filter": name, "cutoff": 1.0})
        noise = scanner_noise_hu(image, volume.pixel_mm, settings, np.random.default_rng(7))
        autocorrelation, _ = masked_autocorrelation([(noise, soft_tissue(image))], MAX_LAG)
        profiles[f"simulator, {name}"] = radial(unit(autocorrelation))
    return profiles


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    known = known_noise_comparison()
    found, notes, volumes = training_textures()
    simulated = simulator_profiles(volumes)
    frequency = np.arange(GRID // 2) / GRID
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    for name, row in known.items():
        axes[0].plot(frequency, row["profile"], label=f"{name} ({row['noise_hu']:.1f} HU)",
                     lw=2.5 if name == "truth" else 1.4, ls="-" if name == "truth" else "--")
    axes[0].set_title(f"phantom, known noise ({KNOWN.filter}, {KNOWN.added_noise_hu:g} HU): which estimate is cleaner")
    for texture in found:
        axes[1].plot(frequency, radial(texture.autocorrelation), lw=2.2,
                     label=f"real: {texture.name} ({texture.noise_hu:.1f} HU)")
    for name, profile in simulated.items():
        axes[1].plot(frequency, profile, lw=1.0, ls=":", label=name)
    axes[1].set_title("training series' own noise (neighbour difference) vs the simulator")
    for axis in axes:
        axis.set_xlabel("cycles per pixel")
        axis.set_ylabel("noise power (unit area)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "nps.png")
    plt.close(figure)
    (out / "README.md").write_text(_report(known, found, notes))


def _report(known: dict, found: list[Texture], notes: list[str]) -> str:
    lines = ["# Real-noise texture: which estimate is cleaner, and the training series' spectra",
             "", f"Made by `python -m evaluation.noise_texture` at commit {_commit()}. Figure: `nps.png`.", "",
             f"## Known noise on a phantom ({KNOWN.filter}, {KNOWN.added_noise_hu:g} HU at the centre, 12 slices)", "",
             "| estimate | noise HU | radial-spectrum shape error |", "| --- | --- | --- |"]
    lines += [f"| {name} | {row['noise_hu']:.1f} | {100 * row['shape_error']:.1f} % |" for name, row in known.items()]
    lines += ["", "## Training series (the difference estimate `noise.real_texture` trains on)", "",
              "| series | own noise HU | matched soft-tissue pixels | lag-1 autocorrelation |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {t.name} | {t.noise_hu:.1f} | {t.pixels} | {t.autocorrelation[MAX_LAG, MAX_LAG + 1]:.2f} |"
              for t in found]
    lines += ["", "Series without a texture (none of them enters the mix):", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "evaluation" / "noise-texture")
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
