"""Decode each series once: HU volumes and simulated low-dose versions cached as ``.npy``.

Training reads random crops from many slices; decoding DICOM for each would dominate. Every
series is decoded once into ``<cache>/<fingerprint>/`` and then memory-mapped, so DataLoader
workers share the pages. The fingerprint covers the files' paths, sizes and modification
times, so an edited series is decoded again. Simulated low-dose volumes are keyed by their
noise settings and seed, so a run is reproducible and a second run pays nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.compare.alignment import resample_onto
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, read_volume
from LDCTDenoiseLib.models.weights import cache_dir
from LDCTDenoiseLib.simulation.noise import ProjectionNoise, simulate_low_dose

from .config import UNALIGNED_STAGES, NoiseConfig, TrainConfig
from .data import Patient
from .sampling import SlicePair


@dataclass(frozen=True)
class Series:
    """A cached HU volume (memory-mapped, read-only) with its geometry."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def volume(self) -> Volume:
        return Volume(np.asarray(self.hu), self.spacing, self.origin, np.asarray(self.direction).reshape(3, 3))


class SeriesCache:
    """Decoded NDCT/LDCT series and simulated low-dose volumes of a dataset's patients."""

    def __init__(self, folder: str | Path | None = None, workers: int = 1, quiet: bool = False) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "training"
        self.workers = max(1, workers)
        self.quiet = quiet

    def ndct(self, patient: Patient) -> Series:
        return self._decoded(patient.ndct)

    def real_pair(self, patient: Patient) -> tuple[Series, Series]:
        """(LDCT, NDCT resampled onto the LDCT grid): matched by table position, not registered."""
        if patient.ldct is None:
            raise ValueError(f"patient {patient.name} has no LDCT series")
        ldct = self._decoded(patient.ldct)
        folder = self._entry(patient.ndct) / f"on-{_fingerprint(patient.ldct)}"
        if not (folder / "hu.npy").is_file():
            self._store(folder, resample_onto(self.ndct(patient).volume(), ldct.volume()))
        return ldct, self._load(folder)

    def simulated_ldct(self, patient: Patient, settings: ProjectionNoise, seed: int) -> Series:
        """The NDCT with projection-domain noise of ``settings``; equals ``simulate_low_dose(seed)``."""
        key = hashlib.sha1(json.dumps([settings.to_dict(), seed], sort_keys=True).encode()).hexdigest()[:16]
        folder = self._entry(patient.ndct) / f"simulated-{key}"
        if not (folder / "hu.npy").is_file():
            label = f"low dose {settings.dose_fraction:g} {patient.name}"
            with tqdm(total=self.ndct(patient).hu.shape[0], desc=label, unit="slice", disable=self.quiet,
                      leave=False) as bar:
                low_dose = simulate_low_dose(self.ndct(patient).volume(), settings, seed,
                                             progress=lambda done, _: bar.update(done - bar.n), workers=self.workers)
            self._store(folder, low_dose, {"settings": settings.to_dict(), "seed": seed})
        return self._load(folder)

    def _decoded(self, path: Path) -> Series:
        if path.suffix == ".npz":  # a packed series (training/pack.py): already HU arrays, nothing to decode
            packed = read_packed(path)
            return Series(packed["hu"], tuple(packed["spacing"]), tuple(packed["origin"]), tuple(packed["direction"]))
        folder = self._entry(path)
        if not (folder / "hu.npy").is_file():
            self._store(folder, read_volume(path), {"source": str(path)})
        return self._load(folder)

    def _entry(self, path: Path) -> Path:
        return self.folder / _fingerprint(path)

    def _store(self, folder: Path, volume: Volume, extra: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        geometry = {
            "spacing": volume.spacing,
            "origin": volume.origin,
            "direction": [float(v) for v in volume.direction.ravel()],
            **(extra or {}),
        }
        with atomic_file(folder / "geometry.json") as tmp:
            tmp.write_text(json.dumps(geometry, indent=1))
        with atomic_file(folder / "hu.npy") as tmp:  # written last: its presence marks a complete entry
            np.save(tmp, volume.array.astype(np.float32))

    def _load(self, folder: Path) -> Series:
        geometry = json.loads((folder / "geometry.json").read_text())
        return Series(
            hu=np.load(folder / "hu.npy", mmap_mode="r"),
            spacing=tuple(geometry["spacing"]),
            origin=tuple(geometry["origin"]),
            direction=tuple(geometry["direction"]),
        )


def read_packed(path: Path) -> dict[str, np.ndarray]:
    """One packed series: ``hu`` (float32), ``spacing``, ``origin``, ``direction`` (9 values)."""
    with np.load(path) as packed:
        missing = {"hu", "spacing", "origin", "direction"} - set(packed.files)
        if missing:
            raise InputError(f"{path} is not a packed series (it lacks {sorted(missing)}); "
                             "make it with ldct-train pack")
        return {"hu": packed["hu"].astype(np.float32), "spacing": packed["spacing"], "origin": packed["origin"],
                "direction": packed["direction"]}


def _fingerprint(path: Path) -> str:
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha1(str(path).encode())
    for file in files:
        stat = file.stat()
        name = file.relative_to(path) if path.is_dir() else file.name
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def evenly_spaced(slices: int, count: int) -> np.ndarray:
    """``count`` slice indices spread over ``slices``; all of them when ``count`` is 0 or larger."""
    if count <= 0 or count >= slices:
        return np.arange(slices)
    return np.linspace(0, slices - 1, count).round().astype(int)


def projection_settings(noise: NoiseConfig, dose_fraction: float) -> ProjectionNoise:
    return ProjectionNoise(
        dose_fraction=dose_fraction,
        photons_per_ray=noise.photons_per_ray,
        electronic_std=noise.electronic_std,
        views=noise.views,
    )


def training_volumes(config: TrainConfig, patients: list[Patient], cache: SeriesCache) -> list[SlicePair]:
    """Each training patient's NDCT with the low-dose volumes this stage needs (decoded/simulated once)."""
    unaligned = config.stage in UNALIGNED_STAGES
    needs_low_dose = config.noise.kind == "projection" or (unaligned and config.noise.kind != "scanner")
    volumes = []
    for patient in patients:
        if unaligned and patient.ldct is not None:
            ldct, ndct = cache.real_pair(patient)
            volumes.append(SlicePair(ndct.hu, (ldct.hu,), simulated=False, pixel_mm=ldct.spacing[0], name=patient.name))
            continue
        ndct = cache.ndct(patient)
        low_dose = (
            tuple(
                cache.simulated_ldct(patient, projection_settings(config.noise, dose), config.noise.seed).hu
                for dose in config.noise.dose_fractions
            )
            if needs_low_dose
            else ()
        )
        volumes.append(SlicePair(ndct.hu, low_dose, pixel_mm=ndct.spacing[0], name=patient.name))
    return volumes
