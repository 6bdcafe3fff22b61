"""Benchmark data: slices of real NDCT series, their simulated low-dose scans and a moved NDCT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LDCTDenoiseLib.compare.alignment import grid_image
from LDCTDenoiseLib.compare.roi import Region, body_mask, box_mask
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, read_volume
from LDCTDenoiseLib.simulation import ProjectionNoise, simulate_low_dose

from .config import CaseSpec, Study

BODY = "body"


@dataclass
class Case:
    spec: CaseSpec
    ndct: Volume
    regions: list[Region]  # the study's boxes, then the whole body (the ablation table's region)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def body(self) -> Region:
        return next(r for r in self.regions if r.name == BODY)


def read_slices(data: Path, series: str, slices: tuple[int, int]) -> Volume:
    """Slices [first, end) of a series, with the geometry of the first one kept."""
    folder = data / series
    if not folder.exists():
        raise InputError(f"{folder} not found: the study reads real CT from the data folder (--data)")
    volume = read_volume(folder)
    first, end = slices
    if not 0 <= first < end <= volume.array.shape[0]:
        raise InputError(f"{series}: slices {first}..{end} outside 0..{volume.array.shape[0]}")
    origin = volume.index_to_world([[0, 0, first]])[0]
    return Volume(np.ascontiguousarray(volume.array[first:end]), volume.spacing, tuple(origin), volume.direction,
                  {"series": series, "slices": [first, end],
                   "convolution_kernel": volume.metadata.get("convolution_kernel")})


def load_case(data: Path, spec: CaseSpec) -> Case:
    ndct = read_slices(data, spec.series, spec.slices)
    regions = [Region(name, box_mask(ndct, box), box.describe()) for name, box in spec.regions.items()]
    regions.append(Region(BODY, body_mask(ndct.array), "the body (largest connected region above -500 HU)"))
    return Case(spec, ndct, regions)


def low_dose(ndct: Volume, study: Study, dose: float, stream: int, workers: int = 2) -> Volume:
    """The low-dose scan of ``ndct`` at ``dose``; ``stream`` picks this case and dose's random stream."""
    settings = ProjectionNoise(dose_fraction=dose, photons_per_ray=study.photons_per_ray)
    seed = int(np.random.SeedSequence([study.noise_seed, stream]).generate_state(1)[0])
    return simulate_low_dose(ndct, settings, seed=seed, workers=workers)


def moved(volume: Volume, rotation_deg: float, shift_mm: tuple[float, float, float]) -> tuple[Volume, sitk.Transform]:
    """The volume as seen after a rigid patient motion (rotation about S through the centre, then a
    shift), on its own grid; voxels moved in from outside the field of view are air."""
    centre = volume.index_to_world([(np.asarray(volume.array.shape[::-1]) - 1) / 2])[0]
    motion = sitk.Euler3DTransform(tuple(centre), 0.0, 0.0, float(np.radians(rotation_deg)), tuple(shift_mm))
    image = volume.to_sitk()
    # Resampling pulls values through the inverse: the patient moved by ``motion``.
    resampled = sitk.Resample(image, grid_image(volume), motion.GetInverse(), sitk.sitkLinear, -1000.0)
    return Volume.from_sitk(resampled, volume.metadata), motion
