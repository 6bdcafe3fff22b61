"""Adapt a model to the scan at hand: self-supervised fine-tuning on the series' own neighbouring slices.

The loss, its mask and the guards live in ``neighbours`` (shared with ``ldct-train selfsup``); here a
copy of the chosen model is fine-tuned on one volume within a budget in minutes or steps, and the
best state on the held-out slices is kept, or the unadapted model when no state beats it. Measured
gains and losses, and when to use it: ``docs/engine.md`` and ``docs/evaluation/adaptation``.
The model passed in is never changed (a copy is trained); ``adapt`` writes no file (``save_adapted``
does, when asked).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import atomic_folder
from ..errors import Cancelled, OutputError
from ..io import Volume
from ..models.weights import LoadedModel
from .neighbours import NeighbourTrainer, prepare_series
from .options import EngineOptions

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Adaptation:
    """The model to denoise with (the adapted copy, or the model given when adaptation was skipped or lost)."""

    model: LoadedModel
    adapted: bool
    summary: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # budget (minutes) -> the model that budget gave (None: unadapted)


def adapt(model: LoadedModel, volume: Volume, options: EngineOptions, progress: StageProgress | None = None,
          cancel=None, snapshot_minutes: tuple[float, ...] = ()) -> Adaptation:
    """Fine-tune a copy of ``model`` on ``volume``'s neighbouring slices within the options' budget.

    ``snapshot_minutes`` also keeps what shorter budgets would have given (the best state validated by
    then): a shorter run makes the same steps, so one run measures several budgets.
    """
    notes: list[str] = []
    summary = {"budget_minutes": options.adapt_minutes, "budget_steps": options.adapt_steps, "notes": notes}
    series = prepare_series(volume.array, volume.spacing[2], volume.metadata.get("slice_thickness_mm"),
                            model.normalization, notes, skipped="adaptation skipped")
    if series is None:
        return Adaptation(model, False, summary)
    max_steps = options.adapt_steps or math.inf
    seconds = 60 * options.adapt_minutes if options.adapt_minutes else math.inf
    total = int(max_steps) if max_steps != math.inf else int(seconds)
    started = time.perf_counter()

    def report(trainer: NeighbourTrainer, _: float) -> None:
        if progress is not None:
            elapsed = int(time.perf_counter() - started)
            progress("adapting", min(trainer.step if max_steps != math.inf else elapsed, total), total)

    base = copy.deepcopy(model.generator).float().cpu()
    try:  # the budget includes the base model's pass over the slices it trains on
        trainer = NeighbourTrainer(copy.deepcopy(base), [series], options.adapt_seed, base=base, cancel=cancel)
        prepared = time.perf_counter() - started
        snapshots = _Snapshots(trainer, snapshot_minutes, prepared)
        result = trainer.fit(max_steps, seconds - prepared, cancel, snapshots.keep, report)
    except Cancelled as cancelled:
        raise Cancelled("adaptation cancelled; nothing was written") from cancelled
    snapshots.keep(math.inf)
    summary.update(result, seconds_per_step=round(result["seconds"] / result["steps"], 3) if result["steps"] else None,
                   preparation_seconds=round(prepared, 1), neighbour_offset=series.offset)
    kept = {minutes: _adapted_model(model, network, summary) if network is not None else None
            for minutes, network in snapshots.networks().items()}
    if result["best_step"] == 0:
        notes.append("adaptation did not lower the held-out slices' self-supervised loss: the unadapted model is used")
        return Adaptation(model, False, summary, kept)
    return Adaptation(_adapted_model(model, trainer.best_network(), summary), True, summary, kept)


class _Snapshots:
    """The best state so far at each snapshot budget, as the run passes it."""

    def __init__(self, trainer: NeighbourTrainer, minutes: tuple[float, ...], prepared: float) -> None:
        self.trainer, self.pending, self.prepared, self.kept = trainer, sorted(minutes), prepared, {}

    def keep(self, elapsed: float) -> None:
        """``elapsed``: seconds of training; the budgets count the preparation too."""
        while self.pending and self.prepared + elapsed >= 60 * self.pending[0]:
            best = self.trainer.best_state if self.trainer.best_step else None
            self.kept[self.pending.pop(0)] = copy.deepcopy(best)

    def networks(self) -> dict[float, torch.nn.Module | None]:
        networks = {}
        for minutes, state in self.kept.items():
            network = None
            if state is not None:
                network = copy.deepcopy(self.trainer.network)
                network.load_state_dict(state)
                network.eval()
            networks[minutes] = network
        return networks


def _adapted_model(model: LoadedModel, network: torch.nn.Module, summary: dict) -> LoadedModel:
    return LoadedModel(network, model.normalization, _adapted_manifest(model, summary), folder=None,
                       name=f"{model.name or 'model'}-adapted")


def _adapted_manifest(model: LoadedModel, summary: dict) -> dict:
    """The base model's manifest, without its weights' checksum (these weights are new), saying what was done.

    No patient identifier is recorded: the model it came from, the budget, the steps and the losses only.
    """
    manifest = {key: value for key, value in model.manifest.items() if key != "sha256"}
    manifest["adaptation"] = {
        "adapted_from": model.name, "adapted_from_sha256": model.manifest.get("sha256"),
        "method": "self-supervised neighbouring-slice fine-tuning (engine/adaptation.py)",
        **{key: summary[key] for key in ("budget_minutes", "budget_steps", "steps", "seconds", "best_step",
                                         "validation_loss_before", "validation_loss_best", "neighbour_offset")},
    }
    return manifest


def adapted_for(model: LoadedModel, volume: Volume, options: EngineOptions, progress: StageProgress | None = None,
                cancel=None) -> Adaptation:
    """The model a run denoises ``volume`` with: adapted when the options ask for it, else ``model`` itself."""
    if not options.adapts:
        return Adaptation(model, False, {})
    return adapt(model, volume, options, progress, cancel)


def save_adapted(adaptation: Adaptation, folder: Path) -> Path:
    """The adapted model as a normal model folder (manifest + safetensors); its provenance says what it came from."""
    from ..models.weights import save_model

    if not adaptation.adapted:
        raise OutputError("adaptation was skipped or did not help (see the notes), so there is no adapted model to "
                          "save; nothing was written")
    manifest = adaptation.model.manifest
    provenance = {**manifest.get("provenance", {}), "adaptation": manifest["adaptation"]}
    summary = (f"{manifest['adaptation']['adapted_from']} adapted to one scan (self-supervised, "
               f"{manifest['adaptation']['steps']} steps)")
    with atomic_folder(folder) as partial:  # a failed or cancelled save leaves no folder
        save_model(adaptation.model.generator, partial, adaptation.model.normalization, provenance,
                   name=Path(folder).name, summary=summary, inference=manifest.get("inference"))
    return Path(folder)
