"""Scanner noise simulated ahead of training: whole-slice noise images on disk, read at almost no cost.

Simulating a crop's noise takes longer than the network's step on it, so drawn per crop the
simulator held a core of two's and the network trained at about 1.3 crops/s. The bank draws
``realisations`` scanner recipes per training slice once, simulates each over the whole slice (so
crops anywhere, and whole slices, cut the same noise) and keeps it as float16 under
``<cache>/noise-bank/<key>/``; training then cuts crops out of memory-mapped files.

Reproducible: entry ``r`` of slice ``k`` of a patient draws from ``default_rng([seed, crc32(patient),
k, r])``, whatever the order or the number of processes that built it. The key covers the
simulator's source, the ranges, the pixel-scale range, the seed and each patient's name and grid,
so a changed simulator or recipe gets a new bank and never reads an old one. A bank holds only
the patients it is built for: the trainer builds it for the training split alone.

Each entry keeps the low-dose noise and, for ``noise.reference_noise_hu``, the same scanner's
noise at ``REFERENCE_LEVEL_HU`` (scaled to the drawn level at read time: at normal dose the noise is
linear in its level; at low dose, with starvation streaks, it is not, so that part is simulated at
its drawn level). Pixel-size augmentation is drawn per entry: the entry's grid has pixels ``s``
times the slice's, centred on it, and the clean crop is resampled onto the same grid.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.simulation import scanner
from LDCTDenoiseLib.simulation.scanner import FILTERS, ScannerRanges, SliceProjection

from .config import UNALIGNED_STAGES, DataConfig
from .sampling import orient, resampled

REFERENCE_LEVEL_HU = 10.0  # the level the normal-dose noise of an entry is stored at
FORMAT = "ldctdenoise-noise-bank/1"


def simulator_fingerprint() -> str:
    """SHA-256 of the simulator's source: a changed simulator invalidates every bank."""
    return hashlib.sha256(Path(scanner.__file__).read_bytes()).hexdigest()


@dataclass(frozen=True)
class BankRecipe:
    """What a bank's entries are drawn from."""

    ranges: ScannerRanges
    realisations: int
    seed: int
    pixel_scale: tuple[float, ...] = ()  # (low, high) or () for the slice's own pixel size
    with_reference: bool = False

    def key(self, patients: list[tuple[str, tuple[int, ...], float]]) -> str:
        described = {"format": FORMAT, "simulator": simulator_fingerprint(), "ranges": _plain(self.ranges),
                     "seed": self.seed, "pixel_scale": list(self.pixel_scale),
                     "reference": self.with_reference, "patients": [[n, list(s), p] for n, s, p in patients]}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


class NoiseBank:
    """Whole-slice noise entries of a list of volumes (``SlicePair``s with names), built once, then read.

    Entries are files of their own, so a bank grows: asking for more realisations keeps the ones
    already simulated (entry ``r`` does not depend on how many there are).
    """

    def __init__(self, folder: Path, volumes: list, recipe: BankRecipe) -> None:
        if recipe.realisations < 1:
            raise ValueError(f"a noise bank needs at least one realisation per slice; got {recipe.realisations}")
        described = [(v.name, tuple(v.ndct.shape), float(v.pixel_mm)) for v in volumes]
        if any(not name for name, _, _ in described):
            raise ValueError("every volume of a noise bank needs its patient's name")
        self.volumes, self.recipe = volumes, recipe
        self.folder = Path(folder) / recipe.key(described)

    def entries(self) -> list[tuple[int, int, int]]:
        """(volume, slice, realisation) of every entry."""
        return [(v, k, r) for v, volume in enumerate(self.volumes) for k in range(volume.ndct.shape[0])
                for r in range(self.recipe.realisations)]

    def missing(self) -> list[tuple[int, int, int]]:
        return [entry for entry in self.entries() if not self._path(*entry).is_file()]

    def build(self, workers: int = 1, quiet: bool = False) -> None:
        """Simulate every missing entry (resumable: finished entries are files, written atomically)."""
        todo = self.missing()
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        total = len(self.entries())
        with tqdm(total=total, initial=total - len(todo), desc="noise bank", unit="entry", disable=quiet,
                  dynamic_ncols=True) as bar:
            if workers <= 1:
                for entry in todo:
                    self._write(entry, *self.simulate(*entry))
                    bar.update(1)
                return
            global _BUILDING
            _BUILDING = self
            with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
                for _ in pool.imap_unordered(_build_one, todo):
                    bar.update(1)

    def simulate(self, v: int, k: int, r: int) -> tuple[np.ndarray, dict]:
        """Entry r of slice k: (2, rows, columns) float16 noise (low dose, reference) and what it drew."""
        volume = self.volumes[v]
        image = np.asarray(volume.ndct[k], dtype=np.float32)
        rng = np.random.default_rng([self.recipe.seed, zlib.crc32(volume.name.encode()), k, r])
        scale = float(rng.uniform(*self.recipe.pixel_scale)) if self.recipe.pixel_scale else 1.0
        settings = self.recipe.ranges.draw(rng)
        levels = (settings.added_noise_hu, REFERENCE_LEVEL_HU if self.recipe.with_reference else 0.0)
        centre = (np.asarray(image.shape) - 1) / 2
        rows, columns = ((np.arange(n) - centre[i]) * scale * volume.pixel_mm for i, n in enumerate(image.shape))
        noise = SliceProjection.of(image, volume.pixel_mm).noise_at_levels_hu(
            settings, levels, rng, rows, columns, default_bin_mm=volume.pixel_mm * scale)
        drawn = {**settings.to_dict(), "filter": FILTERS.index(settings.filter), "pixel_mm": volume.pixel_mm * scale,
                 "scale": scale}
        return np.stack(noise).astype(np.float16), drawn

    def entry(self, v: int, k: int, r: int) -> tuple[np.ndarray, dict]:
        """Entry r of slice k, memory-mapped, and what it drew; the bank must be built."""
        path = self._path(v, k, r)
        if not path.is_file():
            raise FileNotFoundError(f"noise bank {self.folder} lacks entry {r} of slice {k} of "
                                    f"{self.volumes[v].name}; build it first")
        return np.load(path, mmap_mode="r"), json.loads(path.with_suffix(".json").read_text())

    def _write(self, entry: tuple[int, int, int], noise: np.ndarray, drawn: dict) -> None:
        path = self._path(*entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(drawn))
        with atomic_file(path) as tmp:  # written last: its presence marks a finished entry
            np.save(tmp, noise)

    def _path(self, v: int, k: int, r: int) -> Path:
        return self.folder / f"{zlib.crc32(self.volumes[v].name.encode()):08x}" / f"{k:04d}-{r:03d}.npy"


class BankCrops:
    """Crops whose noise is cut from a built ``NoiseBank``: ``ScannerCrops.pair``'s contract, no simulation."""

    def __init__(self, bank: NoiseBank, crop: int, reference_noise_hu: tuple[float, ...] = (),
                 augment: DataConfig | None = None) -> None:
        self.bank, self.crop, self.reference_noise_hu = bank, crop, reference_noise_hu
        self.augment = augment or DataConfig()

    def orient(self, rng: np.random.Generator, *images: np.ndarray) -> tuple[list[np.ndarray], dict]:
        return orient(rng, self.augment, *images)

    def pair(self, rng: np.random.Generator, v: int, k: int, top: int, left: int,
             rescale: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """(noisy, reference, drawn) of the crop centred where (top, left) puts it, on a random entry's grid."""
        noise_images, drawn = self.bank.entry(v, k, int(rng.integers(self.bank.recipe.realisations)))
        scale = drawn["scale"]
        image = np.asarray(self.bank.volumes[v].ndct[k], dtype=np.float32)
        first = [_grid_start(o, self.crop, size, scale) for o, size in zip((top, left), image.shape, strict=True)]
        window = tuple(slice(f, f + self.crop) for f in first)
        if scale == 1.0:
            clean = image[window].copy()
        else:
            centre = [(n - 1) / 2 for n in image.shape]
            rows, columns = ((np.arange(f, f + self.crop) - c) * scale + c for f, c in zip(first, centre, strict=True))
            clean = resampled(image, rows, columns)
        reference_hu = float(rng.uniform(*self.reference_noise_hu)) if self.reference_noise_hu else 0.0
        noise = np.asarray(noise_images[0][window], dtype=np.float32)
        reference = clean + np.asarray(noise_images[1][window], dtype=np.float32) * (reference_hu / REFERENCE_LEVEL_HU)
        recorded = {key: value for key, value in drawn.items() if key != "scale"}
        return reference + noise, reference, {**recorded, "reference_noise_hu": reference_hu}


def config_bank(config, volumes: list, cache_folder: Path) -> NoiseBank | None:
    """The bank a ``TrainConfig`` asks for (``data.noise_bank`` realisations), or None; not built yet."""
    if not config.data.noise_bank:
        return None
    if config.noise.kind != "scanner" or config.stage in UNALIGNED_STAGES:
        raise InputError("data.noise_bank holds scanner noise for aligned stages: set noise.kind=scanner and a "
                         "stage1, gan or pix2pix stage, or data.noise_bank=0")
    recipe = BankRecipe(ScannerRanges.from_dict(config.noise.scanner), config.data.noise_bank, config.noise.seed,
                        tuple(config.data.pixel_scale), bool(config.noise.reference_noise_hu))
    return NoiseBank(Path(cache_folder) / "noise-bank", volumes, recipe)


def _grid_start(origin: int, crop: int, size: int, scale: float) -> int:
    """First index, on a grid of pixels ``scale`` times the slice's, of the crop centred as at ``origin``."""
    centre = (size - 1) / 2
    wanted = (origin + (crop - 1) / 2 - centre) / scale + centre - (crop - 1) / 2
    return int(np.clip(round(wanted), 0, size - crop))


def _plain(ranges: ScannerRanges) -> dict:
    return {name: list(value) for name, value in vars(ranges).items()}


_BUILDING: NoiseBank | None = None  # the bank a forked build worker simulates for


def _one_thread() -> None:
    torch.set_num_threads(1)


def _build_one(entry: tuple[int, int, int]) -> None:
    _BUILDING._write(entry, *_BUILDING.simulate(*entry))
