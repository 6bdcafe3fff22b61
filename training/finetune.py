"""``ldct-train finetune``: retrain a shipped model on a few of the user's own scans (Zhang et al., QIMS 2023).

A model trained elsewhere meets another pixel size, kernel and dose on the user's scanner; a short
retraining on a small share of their own series recovers much of what is lost. The user's series are
cut by slice, not by subject (one or two scans are the common case): the last ``holdout`` share of
every series is kept aside for early stopping, and ``fraction`` of the remaining slices (evenly
spaced) are trained on. Both parts are written as volumes into the run folder with a manifest, so the
run is the ordinary trainer's, resumable and inspectable; the best validated state is exported.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, read_volume, write_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import find_model

from .config import load_config
from .data import load_patients
from .export import export_model
from .trainer import BEST, Trainer

PRESET = "finetune"


@dataclass(frozen=True)
class FinetuneResult:
    run: Path
    model: Path  # the exported model folder
    best_step: int
    best_psnr_soft: float  # on the held-out slices, simulated low dose as in training
    train_slices: int
    holdout_slices: int


def finetune(model: str | Path, data: str | Path, run: str | Path, fraction: float = 1.0, holdout: float = 0.2,
             config: str = PRESET, overrides: list[str] | tuple[str, ...] = (), quiet: bool = False) -> FinetuneResult:
    """Retrain ``model`` (an installed name or a folder) on ``data`` (a dataset folder or manifest)."""
    if not 0 < fraction <= 1 or not 0 < holdout < 1:
        raise InputError(f"fraction must lie in (0, 1] and holdout in (0, 1); got {fraction} and {holdout}")
    source = find_model(str(model))
    if source.normalization != Normalization():
        raise InputError(f"{source.name} uses normalisation {source.normalization.to_dict()}; finetune trains with "
                         f"the default {Normalization().to_dict()} only")
    run = Path(run)
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        raise InputError(f"{run} already holds a run; give a new --out folder")
    manifest, train_slices, holdout_slices = _cut_dataset(data, run / "data", fraction, holdout)
    settings = load_config(config, [
        f"data.dataset={manifest}", f"architecture={source.manifest['architecture']}",
        f"model={json.dumps(source.manifest['config'])}", f"init_from={source.folder}", *overrides,
    ])
    trainer = Trainer(settings, run, quiet=quiet)
    trainer.train()
    if not (run / BEST).is_file():
        raise InputError("no validation ran, so there is no best state to export; keep schedule.validate true")
    exported = export_model(run / BEST, run / "model", half=source.manifest.get("dtype") == "float16",
                            name=f"{source.name}-finetuned", extra={"finetuned_from": source.describe(), "finetune": {
                                "data": str(data), "fraction": fraction, "holdout": holdout,
                                "train_slices": train_slices, "holdout_slices": holdout_slices}})
    return FinetuneResult(run, exported.parent, trainer.best["step"], trainer.best["psnr_soft"], train_slices,
                          holdout_slices)


def _cut_dataset(data: str | Path, folder: Path, fraction: float, holdout: float) -> tuple[Path, int, int]:
    """Each series' training share and held-out tail as volumes, with a manifest fixing their splits."""
    rows, counts = [], [0, 0]
    for patient in load_patients(data):
        volume = read_volume(patient.ndct)
        slices = volume.array.shape[0]
        kept = math.ceil(holdout * slices)
        if slices < 2 or kept >= slices:
            raise InputError(f"{patient.name} has {slices} slice(s); finetune needs at least two per series "
                             "(training slices and held-out ones)")
        pool = slices - kept
        chosen = np.unique(np.linspace(0, pool - 1, max(1, round(fraction * pool))).round().astype(int))
        for split, indices in (("train", chosen), ("validation", np.arange(pool, slices))):
            name = f"{patient.name}-{split}"
            path = folder / name / "ndct.nrrd"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_volume(_slices(volume, indices), path)
            rows.append({"patient": name, "subject": name, "ndct": str(path.resolve()), "ldct": "", "split": split})
            counts[split == "validation"] += len(indices)
    manifest = folder / "dataset.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest, counts[0], counts[1]


def _slices(volume: Volume, indices: np.ndarray) -> Volume:
    """The chosen slices as a volume of the same in-plane geometry (2D training reads slices only)."""
    origin = np.asarray(volume.origin) + indices[0] * volume.spacing[2] * np.asarray(volume.direction)[:, 2]
    return Volume(np.ascontiguousarray(volume.array[indices]), volume.spacing, tuple(origin), volume.direction)
