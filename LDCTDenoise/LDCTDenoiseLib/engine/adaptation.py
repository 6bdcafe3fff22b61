"""Adapt a model to the scan at hand: self-supervised fine-tuning on the series' own neighbouring slices.

Neighbouring slices image almost the same anatomy with independent noise when the slice spacing is
not smaller than the slice thickness, so the mean of slices k-d and k+d is a noisy target for slice k
(Noise2Noise across slices; anatomy that changes steadily along z cancels to first order): the
expected squared error against a noisy target is the error against the clean slice plus the target's
noise variance, so minimising it teaches the scan's own noise texture. Pixels whose local means
differ between the slices (anatomy that changes along z), and edges, are left out of the loss
(Noise2Sim's mask). What a neighbour cannot teach: a bias both slices share, such as
photon-starvation streaks (the base model's job). Measured gains and losses, and when to use it:
``docs/engine.md`` and ``docs/evaluation/adaptation``.

Guards, each reported in the summary's notes:
- slices reconstructed overlapping (SliceThickness > spacing in the header) share noise: the
  neighbour is taken one thickness apart; the noise correlation of neighbours is also measured
  on flat tissue, and the distance grows until it is below ``MAX_NOISE_CORRELATION``, or adaptation
  is skipped;
- too few slices for training and held-out validation pairs: skipped;
- a self-supervised loss on held-out slices of the same series, measured before and during the
  fine-tuning, keeps the best state, stops early when it stops improving, and falls back to the
  unadapted model when no state beats it.
The model passed in is never changed (a copy is trained); ``adapt`` writes no file (``save_adapted`` does,
when asked).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..atomic import atomic_folder
from ..errors import Cancelled, OutputError
from ..io import Volume
from ..models.weights import LoadedModel
from ..networks.base import train_with_frozen_batch_norm
from .options import EngineOptions

MASK_WINDOW = 7  # pixels: the local mean compared between a slice and its neighbour
MASK_HU = 30.0  # local means further apart than this are different anatomy, left out of the loss
MAX_NOISE_CORRELATION = 0.25  # neighbours' noise correlated beyond this is not independent
MAX_OFFSET = 4  # the furthest neighbour tried (slices)
MIN_TRAINING_SLICES = 4
CROP = 128
BATCH = 4
LEARNING_RATE = 1e-4  # Adam; 2e-5 moved too little in a 5-minute budget (phantom, 120 steps)
VALIDATE_EVERY = 40  # steps
MAX_HELD_OUT = 3  # held-out slices (each costs a whole-slice forward pass per validation)
PATIENCE = 4  # validations without improvement before stopping
MIN_GAIN = 0.002  # relative validation-loss drop that counts as an improvement
BODY_HU = -500.0
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
    hu = np.asarray(volume.array, dtype=np.float32)
    offset = neighbour_offset(hu, volume.spacing[2], volume.metadata.get("slice_thickness_mm"), notes)
    summary = {"budget_minutes": options.adapt_minutes, "budget_steps": options.adapt_steps, "notes": notes}
    if offset is None:
        return Adaptation(model, False, summary)
    train, held_out = split_slices(hu.shape[0], offset)
    if len(train) < MIN_TRAINING_SLICES or not held_out:
        notes.append(f"adaptation skipped: {hu.shape[0]} slices leave too few training and held-out pairs at a "
                     f"neighbour distance of {offset} (at least {MIN_TRAINING_SLICES + 2 * offset + 1} slices needed)")
        return Adaptation(model, False, summary)
    trainer = _Trainer(model, hu, offset, train, held_out, options, snapshot_minutes)
    result = trainer.run(progress, cancel)
    summary.update(result)
    summary["neighbour_offset"] = offset
    snapshots = {minutes: _adapted_model(model, network, summary) if network is not None else None
                 for minutes, network in trainer.snapshot_networks().items()}
    if result["best_step"] == 0:
        notes.append("adaptation did not lower the held-out slices' self-supervised loss: the unadapted model is used")
        return Adaptation(model, False, summary, snapshots)
    return Adaptation(_adapted_model(model, trainer.best_network(), summary), True, summary, snapshots)


def _adapted_model(model: LoadedModel, network: torch.nn.Module, summary: dict) -> LoadedModel:
    return LoadedModel(network, model.normalization, _adapted_manifest(model, summary), folder=None,
                       name=f"{model.name or 'model'}-adapted")


def neighbour_offset(hu: np.ndarray, spacing_mm: float, thickness_mm: float | None, notes: list[str]) -> int | None:
    """How many slices apart a slice and its noisy target are; None when no distance gives independent noise."""
    offset = 1
    if thickness_mm and thickness_mm > 1.01 * spacing_mm:
        offset = math.ceil(thickness_mm / spacing_mm - 0.01)
        notes.append(f"slices overlap (thickness {thickness_mm:g} mm, spacing {spacing_mm:g} mm): neighbours "
                     f"{offset} slices apart")
    while offset <= MAX_OFFSET and offset < hu.shape[0]:
        correlation = noise_correlation(hu, offset)
        if correlation is None or correlation <= MAX_NOISE_CORRELATION:
            return offset
        notes.append(f"noise of slices {offset} apart is correlated ({correlation:.2f} > {MAX_NOISE_CORRELATION})")
        offset += 1
    notes.append("adaptation skipped: no neighbour distance gives independent noise (overlapping reconstruction "
                 "or too few slices)")
    return None


def noise_correlation(hu: np.ndarray, offset: int) -> float | None:
    """The correlation of the noise of slices ``offset`` apart, from differences on flat soft tissue.

    Differences cancel the anatomy both slices share (texture included), leaving ``2 s^2 (1 - r)`` of
    the noise: compared with the difference at twice the distance (noise taken as independent there),
    ``r = 1 - var(x_k - x_{k+d}) / var(x_k - x_{k+2d})``. Measured: 0.0 for independent noise on a
    phantom, 0.47 for noise averaged over two neighbours; on real series 0.59 (5 mm every 2.5 mm),
    0.62 (2 mm every 1 mm), 0.17 (2 mm every 2 mm, normal dose). None: too few slices or too little tissue.
    """
    count = hu.shape[0] - 2 * offset
    if count < 1:
        return None
    residual = hu - ndimage.gaussian_filter(hu, (0, 2, 2))
    smooth = ndimage.gaussian_filter(hu, (0, 3, 3))
    flat = (smooth > -150) & (smooth < 150) & (ndimage.generic_gradient_magnitude(smooth, ndimage.sobel) < 200)
    flat = flat[:count] & matched(hu[:count], hu[offset:offset + count]) & matched(hu[:count], hu[2 * offset:])
    if flat.sum() < 1000:  # pixels: the variances to a few per cent
        return None
    near = (residual[:count] - residual[offset:offset + count])[flat].var()
    far = (residual[:count] - residual[2 * offset:])[flat].var()
    return float(1.0 - near / far)


def matched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two (stacks of) slices show the same anatomy: local means within ``MASK_HU`` of each other."""
    size = (1, MASK_WINDOW, MASK_WINDOW) if a.ndim == 3 else MASK_WINDOW
    mean_a = ndimage.uniform_filter(a.astype(np.float32), size)
    mean_b = ndimage.uniform_filter(b.astype(np.float32), size)
    return np.abs(mean_a - mean_b) <= MASK_HU


EDGE_GRADIENT_HU = 60.0  # per pixel, on slices smoothed with a 2-pixel Gaussian


def edges(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Where either slice, smoothed past its noise, changes by more than ``EDGE_GRADIENT_HU`` per pixel."""
    gradient = np.zeros(source.shape, bool)
    for image in (source, target):
        smooth = ndimage.gaussian_filter(image, 2.0)
        gradient |= np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8 > EDGE_GRADIENT_HU
    return ndimage.binary_dilation(gradient, iterations=2)


def split_slices(count: int, offset: int) -> tuple[list[int], list[int]]:
    """Training and held-out slice indices, the held-out ones evenly spread and apart from training pairs.

    A held-out slice and its neighbours within ``offset`` never appear in a training pair, so the
    validation loss is on noise the fine-tuning never saw. One slice in eight is held out, at most three.
    """
    held_count = min(MAX_HELD_OUT, max(1, round(count / 8)))
    centres = np.linspace(offset, count - 1 - offset, held_count + 2)[1:-1].round().astype(int)
    held_out = sorted(set(int(c) for c in centres if offset <= c < count - offset))
    blocked = {i for c in held_out for i in range(c - offset, c + offset + 1)}
    train = [i for i in range(count) if i not in blocked]
    return train, held_out


def examples(sources: list[int], offset: int, usable: set[int]) -> list[tuple[int, tuple[int, ...]]]:
    """(slice, its targets): the mean of both neighbours where both are usable (anatomy that changes
    steadily along z cancels to first order, and the target has half the noise), else each one alone."""
    found = []
    for i in sources:
        both = tuple(n for n in (i - offset, i + offset) if n in usable)
        if len(both) == 2:
            found.append((i, both))
        else:
            found += [(i, (n,)) for n in both]
    return found


class _Trainer:
    def __init__(self, model: LoadedModel, hu: np.ndarray, offset: int, train: list[int], held_out: list[int],
                 options: EngineOptions, snapshot_minutes: tuple[float, ...] = ()) -> None:
        self.options, self.offset = options, offset
        self.snapshots: dict[float, tuple[int, dict] | None] = {}
        self.pending = sorted(snapshot_minutes)
        self.network = copy.deepcopy(model.generator).float().cpu()
        train_with_frozen_batch_norm(self.network)  # batch norm keeps the base model's statistics
        self.hu, self.x = hu, model.normalization.to_network(hu)
        self.pairs = examples(train, offset, set(train))
        self.validation = [self._held_out(source, targets)
                           for source, targets in examples(held_out, offset, set(range(len(hu))))]
        self.rng = np.random.default_rng(options.adapt_seed)
        torch.manual_seed(options.adapt_seed)
        self.optimizer = torch.optim.Adam([p for p in self.network.parameters() if p.requires_grad], lr=LEARNING_RATE)
        self.best_state = copy.deepcopy(self.network.state_dict())

    def run(self, progress: StageProgress | None, cancel) -> dict:
        started, step, stale = time.perf_counter(), 0, 0
        initial = best = self.validation_loss()
        best_step, losses = 0, []
        budget_s = 60 * self.options.adapt_minutes if self.options.adapt_minutes else math.inf
        max_steps = self.options.adapt_steps or math.inf
        total = int(max_steps) if max_steps != math.inf else int(budget_s)
        while step < max_steps and time.perf_counter() - started < budget_s:
            self._take_snapshots(time.perf_counter() - started, best_step)
            if cancel is not None and cancel.cancelled:
                raise Cancelled("adaptation cancelled; nothing was written")
            losses.append(self.train_step())
            step += 1
            if step % VALIDATE_EVERY == 0:
                loss = self.validation_loss()
                if loss < best * (1 - MIN_GAIN):
                    best, best_step, stale = loss, step, 0
                    self.best_state = copy.deepcopy(self.network.state_dict())
                else:
                    stale += 1
                if stale >= PATIENCE:
                    break
            if progress is not None:
                done = step if max_steps != math.inf else int(time.perf_counter() - started)
                progress("adapting", min(done, total), total)
        seconds = time.perf_counter() - started
        self._take_snapshots(math.inf, best_step)
        return {"steps": step, "seconds": round(seconds, 1),
                "seconds_per_step": round(seconds / step, 3) if step else None,
                "validation_loss_before": initial, "validation_loss_best": best, "best_step": best_step,
                "stopped_early": stale >= PATIENCE, "train_loss_last": float(np.mean(losses[-10:])) if losses else None,
                "neighbour_pairs": len(self.pairs), "held_out_pairs": len(self.validation)}

    def _take_snapshots(self, seconds: float, best_step: int) -> None:
        """Keep the best state so far for every snapshot budget that has run out."""
        while self.pending and seconds >= 60 * self.pending[0]:
            minutes = self.pending.pop(0)
            self.snapshots[minutes] = (best_step, copy.deepcopy(self.best_state)) if best_step else None

    def snapshot_networks(self) -> dict[float, torch.nn.Module | None]:
        networks = {}
        for minutes, kept in self.snapshots.items():
            if kept is None:
                networks[minutes] = None
                continue
            network = copy.deepcopy(self.network)
            network.load_state_dict(kept[1])
            networks[minutes] = network.eval()
        return networks

    def train_step(self) -> float:
        inputs, targets, masks = self.batch()
        output = self.network(inputs)
        loss = ((output - targets) ** 2 * masks).sum() / masks.sum().clamp_min(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols = self.x.shape[1:]
        crop_r, crop_c = min(CROP, rows), min(CROP, cols)
        picked = []
        for _ in range(BATCH):
            source, targets = self.pairs[self.rng.integers(len(self.pairs))]
            r, c = self._crop_corner(source, crop_r, crop_c)
            window = (slice(r, r + crop_r), slice(c, c + crop_c))
            target, mask = self.target(source, targets, window)
            flips = self.rng.integers(2, size=2)
            picked.append([_flipped(a, flips) for a in (self.x[source][window], target, mask)])
        stacked = [torch.from_numpy(np.stack([p[k] for p in picked])[:, None].astype(np.float32)) for k in range(3)]
        return tuple(stacked)

    def target(self, source: int, targets: tuple[int, ...], window) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours' mean (network units) and where it shows the source's anatomy."""
        target = np.mean([self.x[t][window] for t in targets], axis=0)
        target_hu = np.mean([self.hu[t][window] for t in targets], axis=0)
        mask = matched(self.hu[source][window], target_hu)
        for t in targets[1:]:
            mask &= matched(self.hu[targets[0]][window], self.hu[t][window])
        mask &= ~edges(self.hu[source][window], target_hu)
        return target, mask

    def _crop_corner(self, index: int, crop_r: int, crop_c: int) -> tuple[int, int]:
        """A crop corner, redrawn (a few times) until the crop is mostly body, where the noise is."""
        rows, cols = self.x.shape[1:]
        for _ in range(8):
            r, c = int(self.rng.integers(rows - crop_r + 1)), int(self.rng.integers(cols - crop_c + 1))
            if (self.hu[index, r:r + crop_r, c:c + crop_c] > BODY_HU).mean() > 0.5:
                break
        return r, c

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Masked squared error of the network's output on held-out slices against their neighbours."""
        self.network.eval()
        total, count = 0.0, 0.0
        for source, target, mask in self.validation:
            output = self.network(torch.from_numpy(self.x[source][None, None])).numpy()[0, 0]
            total += float((((output - target) ** 2) * mask).sum())
            count += float(mask.sum())
        train_with_frozen_batch_norm(self.network)
        return total / max(count, 1.0)

    def _held_out(self, source: int, targets: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
        """A held-out slice with its whole-slice target and mask (in the body), made once."""
        target, mask = self.target(source, targets, (slice(None), slice(None)))
        return source, target, mask & (self.hu[source] > BODY_HU)

    def best_network(self) -> torch.nn.Module:
        self.network.load_state_dict(self.best_state)
        return self.network.eval()


def _flipped(array: np.ndarray, flips: np.ndarray) -> np.ndarray:
    axes = tuple(axis for axis, flip in enumerate(flips) if flip)
    return np.ascontiguousarray(np.flip(array, axes)) if axes else array


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
