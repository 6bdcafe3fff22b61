"""``ldct-train selfsup``: train a model on a folder of one's own low-dose series, no normal-dose scans needed.

The transfer study's retraining for one's own scanner (Zhang et al., QIMS 2023) without paired data:
the loss is the adaptation's (``LDCTDenoiseLib.engine.neighbours``: each slice against the mean of
its two neighbours, mismatched anatomy and edges left out), over every usable series of the folder,
with held-out slices of every series deciding the best state and when to stop. The run folder holds
checkpoints (``--resume`` continues exactly: weights, optimiser, best state, random streams) and the
exported model with its card; the manifest names the model it started from by name and SHA-256 and
the data by counts only (no folder or patient names).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from LDCTDenoiseLib.atomic import write_atomically
from LDCTDenoiseLib.engine.neighbours import NeighbourTrainer, Series, prepare_series
from LDCTDenoiseLib.errors import Cancelled, InputError, LDCTError
from LDCTDenoiseLib.io import READ_SUFFIXES, list_series, read_dicom_series, read_volume
from LDCTDenoiseLib.models.weights import find_model, save_model
from LDCTDenoiseLib.networks import architecture_of

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

CHECKPOINT_EVERY = 40  # steps (one validation)
KEEP_CHECKPOINTS = 2
MIN_SERIES_SLICES = 3


@dataclass(frozen=True)
class SelfsupResult:
    run: Path
    model: Path  # the exported model folder
    steps: int
    best_step: int
    validation_loss_before: float
    validation_loss_best: float
    series_used: int
    notes: tuple[str, ...]


def selfsup(model: str | None, data: str | Path, run: str | Path, steps: int = 2000, minutes: float = 0.0,
            seed: int = 0, from_scratch: bool = False, resume: bool = False, quiet: bool = False) -> SelfsupResult:
    """Train ``model`` (installed name or folder; None: the default) on the low-dose series under ``data``."""
    run = Path(run)
    existing = list_checkpoints(run)
    if existing and not resume:
        raise InputError(f"{run} already holds checkpoints; pass --resume to continue it or --out NEW_FOLDER")
    if resume and not existing:
        raise InputError(f"--resume: {run} holds no checkpoints to continue; leave out --resume to start it")
    source = find_model(model)
    notes: list[str] = []
    series, found, slices = read_series(Path(data), source.normalization, notes)
    base = copy.deepcopy(source.generator).float().cpu()
    torch.manual_seed(seed)  # from scratch, the initial weights follow the seed too
    network = architecture_of(base).build(base.config) if from_scratch else copy.deepcopy(base)
    data_summary = {"series_found": found, "series_used": len(series),
                    "slices": slices, "neighbour_pairs": sum(len(s.pairs) for s in series),
                    "held_out_pairs": sum(len(s.held_out) for s in series)}
    trainer = NeighbourTrainer(network, series, seed, base=None if from_scratch else base)
    if resume:
        state = load_checkpoint(existing[-1])
        if json.loads(state["data"]) != data_summary:
            raise InputError(f"--resume: {existing[-1]} was trained on other data ({state['data']}); this folder "
                             f"gives {json.dumps(data_summary)}")
        trainer.restore(state)
    result = _train(trainer, run, data_summary, steps, minutes, quiet)
    if trainer.best_step == 0:
        raise LDCTError(f"the held-out slices' self-supervised loss never improved in {trainer.step} steps, so no "
                        f"model was exported (checkpoints in {run}); try more steps or other series")
    folder = export(trainer, source, run / "model", data_summary, result, seed, from_scratch)
    return SelfsupResult(run, folder, trainer.step, trainer.best_step, trainer.initial_loss, trainer.best_loss,
                         len(series), tuple(notes))


def read_series(data: Path, normalization, notes: list[str]) -> tuple[list[Series], int, int]:
    """Every usable series under ``data`` (DICOM series and volume files), how many were found, and the
    usable ones' slices in all."""
    volumes = list(_volumes(data))
    if not volumes:
        raise InputError(f"{data}: no DICOM series or volume files ({', '.join(READ_SUFFIXES)}) found; give a folder "
                         "of low-dose series")
    usable, slices = [], 0
    for label, volume in volumes:
        series_notes: list[str] = []
        prepared = prepare_series(volume.array, volume.spacing[2], volume.metadata.get("slice_thickness_mm"),
                                  normalization, series_notes)
        notes += [f"{label} ({volume.array.shape[0]} slices): {note}" for note in series_notes]
        if prepared is not None:
            usable.append(prepared)
            slices += volume.array.shape[0]
    return usable, len(volumes), slices


def _volumes(data: Path):
    """(where, volume) of every volume file and CT series under ``data``; ``where`` is for the console only."""
    if data.is_file():
        yield data.name, read_volume(data)
        return
    if not data.is_dir():
        raise InputError(f"{data} does not exist; give a folder of low-dose series (DICOM or volume files)")
    for path in sorted(p for p in data.rglob("*") if p.is_file() and p.name.lower().endswith(READ_SUFFIXES)):
        yield str(path.relative_to(data)), read_volume(path)
    for found in list_series(data):
        if found.modality == "CT" and len(found.files) >= MIN_SERIES_SLICES:
            folder = Path(os.path.commonpath([p.parent for p in found.files]))
            yield f"{folder.relative_to(data)} (DICOM)", read_dicom_series(folder, found.uid)


def _train(trainer: NeighbourTrainer, run: Path, data_summary: dict, steps: int, minutes: float, quiet: bool) -> dict:
    """Run the trainer with a progress bar and checkpoints; Ctrl-C checkpoints and says how to resume."""
    seconds = 60 * minutes if minutes else math.inf

    def save() -> Path:
        return save_checkpoint({**trainer.state(), "data": json.dumps(data_summary)}, run, KEEP_CHECKPOINTS)

    with tqdm(total=steps, initial=trainer.step, unit="step", desc="self-supervised", disable=quiet) as bar:
        def after_step(trainer: NeighbourTrainer, elapsed: float) -> None:
            bar.update(1)
            bar.set_postfix(best_step=trainer.best_step, held_out=f"{trainer.best_loss:.4g}")
            if trainer.step % CHECKPOINT_EVERY == 0:
                save()

        try:
            result = trainer.fit(steps, seconds, after_step=after_step)
        except KeyboardInterrupt as interrupt:
            raise Cancelled(f"training stopped at step {trainer.step}; resume with --resume --out {run} "
                            f"(checkpoint {save()})") from interrupt
    save()
    return result


def export(trainer: NeighbourTrainer, source, folder: Path, data_summary: dict, result: dict, seed: int,
           from_scratch: bool) -> Path:
    """The best state as a model folder with a model card; provenance by name, checksum and counts only."""
    provenance = {
        "method": "self-supervised neighbouring-slice training (ldct-train selfsup)",
        "method_name": "selfsup",
        "selfsup": {"started_from": f"scratch (the network of {source.name})" if from_scratch else source.name,
                    "started_from_sha256": None if from_scratch else source.manifest.get("sha256"),
                    "seed": seed, "steps": trainer.step, "best_step": trainer.best_step,
                    "validation_loss_before": trainer.initial_loss, "validation_loss_best": trainer.best_loss,
                    "stopped_early": result["stopped_early"], "data": data_summary},
        "machine": {"processor": platform.processor() or platform.machine(), "platform": platform.platform()},
        "software": {"torch": torch.__version__},
    }
    network = trainer.best_network()
    save_model(network, folder, source.normalization, provenance, name=folder.parent.name + "-selfsup",
               summary=f"{source.name} trained self-supervised on {data_summary['series_used']} series of one's own",
               inference=source.manifest.get("inference"))
    card = folder / "MODEL_CARD.md"
    write_atomically(card, lambda tmp: tmp.write_text(selfsup_card(folder.name, provenance, network)))
    return folder


def selfsup_card(name: str, provenance: dict, network: torch.nn.Module) -> str:
    """What the manifest records, in words; what it does not know (quality against a normal dose) is said."""
    run, data = provenance["selfsup"], provenance["selfsup"]["data"]
    parameters = sum(p.numel() for p in network.parameters())
    gain = 1 - run["validation_loss_best"] / run["validation_loss_before"]
    return "\n".join([
        f"# Model card: `{name}` (self-supervised on one's own low-dose series)", "",
        "**Not clinically validated.** Trained without normal-dose images: nothing here measures it against one.",
        "",
        f"- Method: {provenance['method']}: each slice against the mean of its two neighbours, mismatched anatomy "
        f"and edges left out (`LDCTDenoiseLib/engine/neighbours.py`); {parameters:,} parameters.",
        f"- Started from: {run['started_from']}" + (f" (SHA-256 {run['started_from_sha256']})"
                                                    if run["started_from_sha256"] else "") + ".",
        f"- Data: {data['series_used']} of {data['series_found']} series usable, {data['slices']} slices, "
        f"{data['neighbour_pairs']} training pairs, {data['held_out_pairs']} held-out pairs.",
        f"- Training: {run['steps']} steps (seed {run['seed']}), best at step {run['best_step']}"
        f"{', stopped early' if run['stopped_early'] else ''}; held-out self-supervised loss "
        f"{run['validation_loss_before']:.4g} -> {run['validation_loss_best']:.4g} ({100 * gain:.1f} % lower); on "
        f"{provenance['machine']['processor']} ({provenance['machine']['platform']}), torch "
        f"{provenance['software']['torch']}.",
        "- Limits: a bias that neighbouring slices share (photon-starvation streaks) cannot be learnt from them; "
        "overlapping reconstructions are trained on neighbours one thickness apart; check the result against a "
        "normal-dose scan where you have one (`ldct-denoise compare`).", ""])
