"""Random training crops: stage-1 (noisy, clean) pairs and stage-2 unaligned (LDCT, NDCT) pairs.

Every sample is a pure function of (seed, sample index): the DataLoader may use any number of
workers and a resumed run draws exactly the crops the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.simulation.scanner import FILTERS, ScannerRanges, SliceProjection

from .config import DataConfig, NoiseConfig, Stage2Config

TISSUE_HU = -700.0  # a crop must hold some pixels above this (not air only)
WATER_MU_PER_MM = 0.019  # linear attenuation of water at about 70 keV
# water-equivalent path beyond which a ray's few photons show as streaks; the longest paths in ../shared/data:
# 250-280 mm through chests, 325-360 mm through shoulders and hips, up to 460 mm with the arms down
STARVED_PATH_MM = 320.0
STARVATION_ANGLES = 8  # ray directions over 180 degrees
CROP_TRIES = 20
NOISE_KINDS = ("gaussian", "projection", "scanner")
PROJECTIONS_KEPT = 1024  # slices whose SliceProjection a worker keeps (about 150 kB each)
# what a scanner-noise sample records (samples.csv)
SAMPLE_FIELDS = ("added_noise_hu", "filter", "cutoff", "views", "detector_mm", "electronic_std", "bowtie", "modulation",
                 "pixel_mm", "rot90", "flip", "reference_noise_hu", "real_texture")


@dataclass(frozen=True)
class SlicePair:
    """Aligned arrays of one patient: the normal-dose volume and its noisy versions (if any)."""

    ndct: np.ndarray  # (slices, rows, columns) HU, usually memory-mapped
    ldct: tuple[np.ndarray, ...] = ()  # same grid; simulated low-dose realisations or a real LDCT
    simulated: bool = True  # a real LDCT is already unaligned; a simulated one is deformed
    pixel_mm: float = 1.0  # in-plane pixel size (scanner noise is simulated at it)
    name: str = ""  # the patient's (keys a noise bank)


@dataclass(frozen=True)
class CropSpec:
    """How crops are drawn: their size, the run's seed, the network's normalisation, the tissue share."""

    size: int
    seed: int
    normalization: Normalization
    min_tissue_fraction: float = 0.1
    starvation_boost: float = 0.0  # a slice is drawn (1 + boost x starvation_share) times as often


class CropDataset(Dataset):
    """Crops of random slices (weighted by slice count) that hold tissue, not air only."""

    def __init__(self, volumes: list[SlicePair], crops: CropSpec) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = volumes
        self.crop, self.seed = crops.size, crops.seed
        self.normalization = crops.normalization
        self.min_tissue_fraction = crops.min_tissue_fraction
        counts = np.array([v.ndct.shape[0] for v in volumes])
        self._slice_weights = counts / counts.sum()
        self._within = None  # per volume: its slices' draw probabilities, where starvation weights them
        if crops.starvation_boost > 0:
            weights = [1.0 + crops.starvation_boost * np.array([starvation_share(np.asarray(slice_hu), v.pixel_mm)
                                                               for slice_hu in v.ndct]) for v in volumes]
            totals = np.array([w.sum() for w in weights])
            self._slice_weights = totals / totals.sum()
            self._within = [w / w.sum() for w in weights]
        for v in volumes:
            if min(v.ndct.shape[1:]) < self.crop:
                raise ValueError(f"slices of {v.ndct.shape[1:]} pixels are smaller than the crop {self.crop}")

    def require_low_dose(self, why: str) -> None:
        if not all(v.ldct for v in self.volumes):
            raise ValueError(f"{why} needs a low-dose volume (real or simulated) for every patient")

    def __len__(self) -> int:  # samples are drawn by index; any index is valid
        return 2**62

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def locate(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(volume, slice, top, left) of a crop around a random tissue pixel with enough tissue.

        Anchoring on a pixel above -700 HU keeps air-only crops out; a crop that still holds too
        little tissue is drawn again, and after ``CROP_TRIES`` the best one drawn is used.
        """
        best, best_fraction = None, -1.0
        for _ in range(CROP_TRIES):
            v = int(rng.choice(len(self.volumes), p=self._slice_weights))
            ndct = self.volumes[v].ndct
            k = int(rng.integers(ndct.shape[0])) if self._within is None else int(rng.choice(ndct.shape[0],
                                                                                             p=self._within[v]))
            top, left = self._anchored_origin(np.asarray(ndct[k]), rng)
            fraction = float(np.mean(ndct[k, top : top + self.crop, left : left + self.crop] > TISSUE_HU))
            if fraction > best_fraction:
                best, best_fraction = (v, k, top, left), fraction
            if fraction >= self.min_tissue_fraction:
                break
        return best

    def _anchored_origin(self, image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        rows, columns = image.shape
        tissue = np.flatnonzero(image > TISSUE_HU)
        if tissue.size == 0:
            return int(rng.integers(rows - self.crop + 1)), int(rng.integers(columns - self.crop + 1))
        row, column = divmod(int(tissue[rng.integers(tissue.size)]), columns)
        top = int(np.clip(row - rng.integers(self.crop), 0, rows - self.crop))
        left = int(np.clip(column - rng.integers(self.crop), 0, columns - self.crop))
        return top, left

    def tensors(self, noisy: np.ndarray, clean: np.ndarray) -> dict[str, torch.Tensor]:
        as_input = lambda hu: torch.from_numpy(self.normalization.to_network(hu).astype(np.float32))[None]  # noqa: E731
        return {"input": as_input(noisy), "target": as_input(clean)}


class ScannerCrops:
    """Scanner-noise crops of training volumes: simulated per crop at its pixel size, then turned.

    Every crop draws its own ``ScannerNoise`` from the ranges; what it drew comes back as a dict
    of ``SAMPLE_FIELDS`` (the filter as its index in ``FILTERS``). A worker keeps the projection of
    the slices it has seen, so later crops of a slice cost only the noise draw and back-projection.
    """

    def __init__(self, volumes: list[SlicePair], crop: int, noise: NoiseConfig, augment: DataConfig) -> None:
        self.volumes, self.crop, self.augment = volumes, crop, augment
        self.ranges = ScannerRanges.from_dict(noise.scanner)
        self.reference_noise_hu = tuple(noise.reference_noise_hu)
        if self.reference_noise_hu and not 0 <= self.reference_noise_hu[0] <= self.reference_noise_hu[1]:
            raise ValueError(f"noise.reference_noise_hu is [low, high] with 0 <= low <= high; "
                             f"got {list(self.reference_noise_hu)}")
        self._projections: dict[tuple[int, int], SliceProjection] = {}

    def pair(self, rng: np.random.Generator, v: int, k: int, top: int, left: int,
             rescale: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """(noisy, reference, drawn) of the crop at (top, left) of slice k, its pixel size maybe rescaled.

        The reference is the NDCT crop plus, with ``noise.reference_noise_hu``, normal-dose noise of
        the same scanner at a level drawn uniformly from that range; the noisy crop is the
        reference plus the low-dose noise. A model that learns the reference keeps a normal-dose
        scan's own noise instead of taking every scan for a cleaner one than it is.
        """
        volume = self.volumes[v]
        image = np.asarray(volume.ndct[k], dtype=np.float32)
        pixel_scale = self.augment.pixel_scale if rescale else []
        scale = float(rng.uniform(*pixel_scale)) if pixel_scale else 1.0
        # crop pixel centres: the located crop's centre kept, the pixel size scaled
        offsets = (np.arange(self.crop) - (self.crop - 1) / 2) * scale
        rows = top + (self.crop - 1) / 2 + offsets
        columns = left + (self.crop - 1) / 2 + offsets
        if scale == 1.0:
            clean = image[top : top + self.crop, left : left + self.crop].copy()
        else:
            clean = resampled(image, rows, columns)
        settings = self.ranges.draw(rng)
        reference_hu = float(rng.uniform(*self.reference_noise_hu)) if self.reference_noise_hu else 0.0
        projection = self._projection(v, k, image, volume.pixel_mm)
        centre = (np.asarray(image.shape) - 1) / 2
        noise, reference_noise = projection.noise_at_levels_hu(
            settings, (settings.added_noise_hu, reference_hu), rng, (rows - centre[0]) * volume.pixel_mm,
            (columns - centre[1]) * volume.pixel_mm, default_bin_mm=volume.pixel_mm * scale,
            device=None if self.augment.simulation_device == "cpu" else self.augment.simulation_device)
        reference = clean + reference_noise
        drawn = {**settings.to_dict(), "filter": FILTERS.index(settings.filter), "pixel_mm": volume.pixel_mm * scale,
                 "reference_noise_hu": reference_hu}
        return reference + noise, reference, drawn

    def orient(self, rng: np.random.Generator, *images: np.ndarray) -> tuple[list[np.ndarray], dict]:
        return orient(rng, self.augment, *images)

    def _projection(self, v: int, k: int, image: np.ndarray, pixel_mm: float) -> SliceProjection:
        key = (v, k)
        if key not in self._projections:
            if len(self._projections) >= PROJECTIONS_KEPT:
                self._projections.pop(next(iter(self._projections)))
            self._projections[key] = SliceProjection.of(image, pixel_mm)
        return self._projections[key]


def _params(drawn: dict) -> torch.Tensor:
    return torch.tensor([float(drawn.get(name, 0.0)) for name in SAMPLE_FIELDS])


class Stage1Crops(CropDataset):
    """Stage 1: pixel-aligned (noisy, clean) crops; noise is Gaussian, projection-domain or scanner.

    With ``scanner`` noise each sample also returns what it drew under ``params`` (``SAMPLE_FIELDS``);
    ``scanner`` may be a ``noise_bank.BankCrops`` that cuts the noise out of a bank built ahead, and
    ``texture`` a ``real_noise.TextureMix`` that mixes real-noise texture into some crops' noise.
    """

    def __init__(self, volumes: list[SlicePair], crops: CropSpec, noise: NoiseConfig,
                 augment: DataConfig | None = None, scanner=None, texture=None) -> None:
        super().__init__(volumes, crops)
        self.noise, self.texture = noise, texture
        if noise.kind not in NOISE_KINDS:
            raise ValueError(f"noise.kind must be one of {', '.join(NOISE_KINDS)}; got {noise.kind!r}")
        if noise.kind == "projection":
            self.require_low_dose("projection noise")
        self.scanner = scanner or ScannerCrops(volumes, self.crop, noise, augment or DataConfig())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        v, k, top, left = self.locate(rng)
        if self.noise.kind == "scanner":
            noisy, clean, drawn = self.scanner.pair(rng, v, k, top, left)
            if self.texture is not None:
                noise, drawn["real_texture"] = self.texture(rng, noisy - clean)
                noisy = clean + noise
            (noisy, clean), turned = self.scanner.orient(rng, noisy, clean)
            return {**self.tensors(noisy, clean), "params": _params({**drawn, **turned})}
        window = (k, slice(top, top + self.crop), slice(left, left + self.crop))
        clean = np.asarray(self.volumes[v].ndct[window], dtype=np.float32)
        if self.noise.kind == "projection":
            realisations = self.volumes[v].ldct
            noisy = np.asarray(realisations[int(rng.integers(len(realisations)))][window], dtype=np.float32)
        else:
            noisy = clean + gaussian_noise(rng, clean.shape, self.noise)
        return self.tensors(noisy, clean)


def starvation_share(hu: np.ndarray, pixel_mm: float) -> float:
    """The share of parallel rays through the slice (``STARVATION_ANGLES`` directions) whose water-equivalent
    path exceeds ``STARVED_PATH_MM``: shoulders, pelvis and arms down, where photon starvation streaks."""
    mu = np.clip(1.0 + np.asarray(hu, dtype=np.float32) / 1000.0, 0.0, None) * WATER_MU_PER_MM * pixel_mm
    starved = total = 0
    for angle in np.linspace(0.0, 180.0, STARVATION_ANGLES, endpoint=False):
        paths = ndimage.rotate(mu, angle, reshape=True, order=1).sum(axis=0) / WATER_MU_PER_MM
        through = paths > 0.05 * paths.max() if paths.max() > 0 else np.zeros(paths.shape, dtype=bool)
        starved += int(np.count_nonzero(paths > STARVED_PATH_MM))
        total += int(np.count_nonzero(through))
    return starved / total if total else 0.0


def resampled(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``image`` (HU) at the given row and column positions, linearly interpolated, air outside."""
    grid = np.meshgrid(rows, columns, indexing="ij")
    return ndimage.map_coordinates(image, grid, order=1, mode="constant", cval=-1024.0).astype(np.float32)


def orient(rng: np.random.Generator, augment: DataConfig, *images: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """The images turned by the same random multiple of 90 degrees and flip (if enabled)."""
    turns = int(rng.integers(4)) if augment.rot90 else 0
    flip = bool(rng.integers(2)) if augment.flips else False
    return [_oriented(image, turns, flip) for image in images], {"rot90": turns, "flip": int(flip)}


def _oriented(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    image = np.rot90(image, turns)
    return np.ascontiguousarray(image[:, ::-1] if flip else image)


class Stage2Pairs(CropDataset):
    """Stage 2: an LDCT crop and the NDCT crop of the same table position, not pixel-aligned.

    With a simulated LDCT (a cached projection-noise volume, or scanner noise drawn per crop when
    ``noise.kind`` is scanner) the NDCT comes from a nearby slice (offset up to
    ``max_slice_offset``) and is moved by a small random rotation, shift and smooth elastic
    deformation, as a patient moves between two scans. A real LDCT is used as it is (already
    another scan).
    """

    def __init__(self, volumes: list[SlicePair], crops: CropSpec, pairs: Stage2Config,
                 noise: NoiseConfig | None = None, augment: DataConfig | None = None) -> None:
        super().__init__(volumes, crops)
        self.pairs = pairs
        self.scanner = None
        if noise is not None and noise.kind == "scanner":
            self.scanner = ScannerCrops(volumes, self.crop, noise, augment or DataConfig())
        else:
            self.require_low_dose("stage 2")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        v, k, top, left = self.locate(rng)
        volume = self.volumes[v]
        if self.scanner is not None and volume.simulated:
            noisy, _, _ = self.scanner.pair(rng, v, k, top, left, rescale=False)
        else:
            ldct = volume.ldct[int(rng.integers(len(volume.ldct)))]
            noisy = np.asarray(ldct[k, top : top + self.crop, left : left + self.crop], dtype=np.float32)
        if volume.simulated:
            offset = int(rng.integers(-self.pairs.max_slice_offset, self.pairs.max_slice_offset + 1))
            k_ndct = int(np.clip(k + offset, 0, volume.ndct.shape[0] - 1))
            clean = deformed_crop(volume.ndct[k_ndct], top, left, self.crop, self.pairs, rng)
        else:
            clean = np.asarray(volume.ndct[k, top : top + self.crop, left : left + self.crop], dtype=np.float32)
        if self.scanner is not None:
            (noisy, clean), _ = self.scanner.orient(rng, noisy, clean)
        return self.tensors(noisy, clean)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, int], noise: NoiseConfig) -> np.ndarray:
    """White Gaussian noise in HU; optionally its std varies smoothly over the crop."""
    low, high = noise.gaussian_std_hu
    std = rng.uniform(low, high)
    field = rng.standard_normal(shape).astype(np.float32) * std
    if noise.spatially_varying:
        coarse = rng.uniform(0.5, 1.5, size=(4, 4))
        field *= ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=1, mode="nearest")
    return field


def deformed_crop(
    image: np.ndarray, top: int, left: int, crop: int, pairs: Stage2Config, rng: np.random.Generator
) -> np.ndarray:
    """The crop at (top, left) of ``image`` after a random rigid + elastic motion (HU, air outside)."""
    rows, columns = np.mgrid[0:crop, 0:crop].astype(np.float64)
    centre = (crop - 1) / 2
    angle = np.radians(rng.uniform(-pairs.rotation_deg, pairs.rotation_deg))
    shift = rng.uniform(-pairs.shift_px, pairs.shift_px, size=2)
    y, x = rows - centre, columns - centre
    source_y = np.cos(angle) * y - np.sin(angle) * x + centre + top + shift[0]
    source_x = np.sin(angle) * y + np.cos(angle) * x + centre + left + shift[1]
    if pairs.elastic_px > 0:
        grid = pairs.elastic_grid
        for coordinates in (source_y, source_x):
            coarse = rng.uniform(-pairs.elastic_px, pairs.elastic_px, size=(grid, grid))
            coordinates += ndimage.zoom(coarse, crop / grid, order=3, mode="nearest")[:crop, :crop]
    return ndimage.map_coordinates(
        np.asarray(image, dtype=np.float32), [source_y, source_x], order=1, mode="constant", cval=-1024.0
    ).astype(np.float32)


class StepBatches(Sampler[list[int]]):
    """Sample indices of each step's batch (this process's share), from ``start_step`` on.

    Step ``s`` of a run always uses samples ``s*batch .. s*batch+batch-1`` of the global batch;
    DDP process ``rank`` takes its contiguous slice of them.
    """

    def __init__(self, batch: int, start_step: int, end_step: int, rank: int = 0, world_size: int = 1) -> None:
        if batch % world_size:
            raise ValueError(f"the batch ({batch}) must divide among {world_size} processes")
        self.batch, self.start, self.end = batch, start_step, end_step
        self.local = batch // world_size
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            first = step * self.batch + self.offset
            yield list(range(first, first + self.local))

    def __len__(self) -> int:
        return max(0, self.end - self.start)
