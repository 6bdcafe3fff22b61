"""Self-supervised training on a series' own neighbouring slices (Noise2Noise across slices).

Neighbouring slices image almost the same anatomy with independent noise when the slice spacing is
not smaller than the slice thickness, so the mean of slices k-d and k+d is a noisy target for slice k
(anatomy that changes steadily along z cancels to first order): the expected squared error against a
noisy target is the error against the clean slice plus the target's noise variance, so minimising it
teaches the scan's own noise texture. Pixels where the two neighbours' local means differ (anatomy
that changes along z), and edges, are left out of the loss (Noise2Sim's mask), judged from the
neighbours only so that the mask never depends on the source's noise. What a neighbour cannot teach:
a bias both slices share, such as photon-starvation streaks (the base model's job), and detail that
changes from slice to slice: on real 2-5 mm series the neighbours' mean shows half of a slice's detail
at about 0.05-0.1 cycle per pixel and little above 0.2, so a network fitting it learns to blur (what
cost 0.1-1.0 dB on real chest series before). With a base model, the target teaches only the spatial
frequencies its neighbours share (``detail_transfer``, ``shared_bands``), measured on the series
itself; the base model's output holds the others (``neighbour_loss``).

Used by ``adaptation`` (one scan, minutes) and by ``ldct-train selfsup`` (a folder of a user's own
low-dose series, resumable). Guards, each reported in the notes: overlapping slices (header or
measured noise correlation) move the neighbours further apart or skip the series; too few slices
skip it; a loss on held-out slices keeps the best state and stops when it stops improving.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..errors import Cancelled
from ..models.normalization import Normalization
from ..networks.base import train_with_frozen_batch_norm

LOW_PASS_PX = 2.0  # Gaussian sigma: the band below it keeps the base model's correction (see NeighbourTrainer)
MASK_WINDOW = 7  # pixels: the local mean compared between the two neighbours
DENOISED_WINDOW = 5  # pixels: the same, between the base model's outputs (little noise left to average)
MASK_HU = 30.0  # local means further apart than this are different anatomy, left out of the loss
MASK_NOISE_SIGMAS = 3.0  # ... or further apart than this many standard deviations of noise alone
EDGE_GRADIENT_HU = 60.0  # per pixel, on slices smoothed with a 2-pixel Gaussian
MAX_NOISE_CORRELATION = 0.25  # neighbours' noise correlated beyond this is not independent
MAX_OFFSET = 4  # the furthest neighbour tried (slices)
MIN_TRAINING_PAIRS = 4
CROP = 128
BATCH = 4
LEARNING_RATE = 1e-4  # Adam; 2e-5 moved too little in a 5-minute budget (phantom, 120 steps)
VALIDATE_EVERY = 40  # steps
MAX_DENOISED_SLICES = 48  # slices the base model denoises once (about 0.9 s each at 512 x 512 on 2 cores)
RUN = 8  # neighbouring sources kept together when only some slices are used
MAX_HELD_OUT = 3  # held-out slices per series (each costs a whole-slice forward pass per validation)
PATIENCE = 4  # validations without improvement before stopping
TRANSFER_BINS = 64  # radial frequency bins of the detail transfer, DC to the corner
WARMUP_STEPS = 20  # the learning rate rises linearly over these steps
SHARED_NONE, SHARED_FULL = 0.7, 0.9  # transfer: the neighbour target teaches nothing below, everything above
TRANSFER_BORDER = 8  # pixels at a crop's border left out of the loss (the transfer's FFT wraps around)
MIN_GAIN = 0.002  # relative validation-loss drop that counts as an improvement
BODY_HU = -500.0
Pair = tuple[int, tuple[int, int]]  # (slice, its two neighbours)


@dataclass
class Series:
    """One series ready for neighbour training: its slices (HU and network units) and which pairs serve."""

    hu: np.ndarray
    x: np.ndarray
    offset: int
    threshold: float  # HU: the mismatch mask's threshold for this series' noise
    pairs: list[Pair]
    held_out: list[Pair]
    hu_scale: float  # HU per network unit


def prepare_series(hu: np.ndarray, spacing_mm: float, thickness_mm: float | None, normalization: Normalization,
                   notes: list[str], skipped: str = "skipped") -> Series | None:
    """The series' training pairs and held-out pairs, or None (with a note, starting ``skipped``, saying why)."""
    hu = np.asarray(hu, dtype=np.float32)
    offset = neighbour_offset(hu, spacing_mm, thickness_mm, notes, skipped)
    if offset is None:
        return None
    train, held_out = split_slices(hu.shape[0], offset)
    pairs = examples(train, offset, set(train))
    held = examples(held_out, offset, set(range(hu.shape[0])))
    if len(pairs) < MIN_TRAINING_PAIRS or not held:
        notes.append(f"{skipped}: {hu.shape[0]} slices leave too few training and held-out pairs at a neighbour "
                     f"distance of {offset} ({len(pairs)} training pairs, at least {MIN_TRAINING_PAIRS} needed)")
        return None
    return Series(hu, normalization.to_network(hu), offset, mismatch_threshold(hu, offset), pairs, held,
                  normalization.scale)


def neighbour_offset(hu: np.ndarray, spacing_mm: float, thickness_mm: float | None, notes: list[str],
                     skipped: str = "skipped") -> int | None:
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
    notes.append(f"{skipped}: no neighbour distance gives independent noise (overlapping reconstruction or too "
                 "few slices)")
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


def matched(a: np.ndarray, b: np.ndarray, threshold: float = MASK_HU, window: int = MASK_WINDOW) -> np.ndarray:
    """Where two (stacks of) slices show the same anatomy: local means within ``threshold`` of each other."""
    size = (1, window, window) if a.ndim == 3 else window
    mean_a = ndimage.uniform_filter(a.astype(np.float32), size)
    mean_b = ndimage.uniform_filter(b.astype(np.float32), size)
    return np.abs(mean_a - mean_b) <= threshold


def mismatch_threshold(hu: np.ndarray, offset: int) -> float:
    """How far apart the neighbours' local means may be: ``MASK_HU``, or more where noise alone moves them.

    The noise of a local-mean difference is measured robustly (median absolute deviation, in the body):
    a threshold below it would leave pixels out by their noise rather than by their anatomy.
    """
    count = hu.shape[0] - 2 * offset
    size = (1, MASK_WINDOW, MASK_WINDOW)
    difference = ndimage.uniform_filter(hu[:count], size) - ndimage.uniform_filter(hu[2 * offset:], size)
    body = (hu[:count] > BODY_HU) & (hu[2 * offset:] > BODY_HU)
    if body.sum() < 1000:
        return MASK_HU
    values = difference[body]
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return max(MASK_HU, MASK_NOISE_SIGMAS * spread)


def edges(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Where either slice, smoothed past its noise, changes by more than ``EDGE_GRADIENT_HU`` per pixel."""
    gradient = np.zeros(before.shape, bool)
    for image in (before, after):
        smooth = ndimage.gaussian_filter(image, 2.0)
        gradient |= np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8 > EDGE_GRADIENT_HU
    return ndimage.binary_dilation(gradient, iterations=2)


def split_slices(count: int, offset: int) -> tuple[list[int], list[int]]:
    """Training and held-out slice indices, the held-out ones evenly spread and apart from training pairs.

    A held-out slice and its neighbours within ``offset`` never appear in a training pair, so the
    validation loss is on noise the fine-tuning never saw. One slice in sixteen is held out (at least one,
    at most ``MAX_HELD_OUT``): each blocks ``2 offset + 1`` slices and breaks the chain of training
    pairs, which need both neighbours.
    """
    held_count = min(MAX_HELD_OUT, max(1, count // 16))
    centres = np.linspace(offset, count - 1 - offset, held_count + 2)[1:-1].round().astype(int)
    held_out = sorted(set(int(c) for c in centres if offset <= c < count - offset))
    blocked = {i for c in held_out for i in range(c - offset, c + offset + 1)}
    train = [i for i in range(count) if i not in blocked]
    return train, held_out


def examples(sources: list[int], offset: int, usable: set[int]) -> list[Pair]:
    """(slice, its two neighbours) where both are usable: the mask compares the neighbours with each other."""
    return [(i, (i - offset, i + offset)) for i in sources if {i - offset, i + offset} <= usable]


def detail_transfer(slices: Callable[[int], np.ndarray], pairs: list[Pair], where: Callable[[Pair], np.ndarray]
                    ) -> np.ndarray:
    """How much of a slice's in-plane detail its neighbours' mean shows, by spatial frequency (radial profile).

    Fine detail (small vessels, trabeculae, texture) changes over a few millimetres of z, so the
    neighbours' mean shows it attenuated or not at all: a network trained to predict that mean learns
    to blur it (measured: the whole loss of adaptation on real 2-5 mm series, whose normal doses keep
    half their detail at about 0.1 cycle per pixel from one slice to the next and little above 0.2).
    Per frequency, the transfer is the regression of the neighbours' mean on the slice: their
    cross-spectrum over the slice's power spectrum, from the base model's outputs (little noise; what
    noise is left lowers it, so it errs towards keeping the base model), over ``where`` (the pixels the
    loss keeps: its mask selects pixels whose neighbours agree, where more is shared than in the whole
    slice; a transfer measured on the whole slice made the network deconvolve, by up to 30 HU of
    contrast on a 5 mm chest series). 64 bins from DC to the corner, in [0, 1], never rising with
    frequency (finer detail decorrelates faster).
    """
    cross = np.zeros(TRANSFER_BINS)
    power = np.zeros(TRANSFER_BINS)
    for source, (before, after) in pairs:
        weight = ndimage.gaussian_filter(where((source, (before, after))).astype(np.float32), 2.0)
        if weight.sum() < 1000:
            continue
        spectra = {}
        for index in (before, source, after):
            image = slices(index)
            spectra[index] = np.fft.rfft2(weight * (image - np.average(image, weights=weight)))
        bins = _radial_bins(image.shape).ravel()
        neighbours = (spectra[before] + spectra[after]) / 2
        cross += np.bincount(bins, (neighbours * spectra[source].conj()).real.ravel(), TRANSFER_BINS)
        power += np.bincount(bins, (np.abs(spectra[source]) ** 2).ravel(), TRANSFER_BINS)
    transfer = np.divide(cross, power, out=np.zeros(TRANSFER_BINS), where=power > 0)
    transfer[0] = 1.0
    return np.minimum.accumulate(np.clip(transfer, 0.0, 1.0))


def _radial_bins(image_shape: tuple[int, int]) -> np.ndarray:
    """Each rfft2 coefficient's radial frequency bin."""
    rows = np.fft.fftfreq(image_shape[0])[:, None]
    cols = np.fft.rfftfreq(image_shape[1])[None, :]
    return np.minimum((np.hypot(rows, cols) * 2 * (TRANSFER_BINS - 1) / np.sqrt(2)).round().astype(int),
                      TRANSFER_BINS - 1)


def filtered(images: torch.Tensor, gain: np.ndarray) -> torch.Tensor:
    """``images`` (N, 1, H, W) with each spatial frequency times its gain (a radial profile)."""
    shape = tuple(images.shape[-2:])
    gains = torch.from_numpy(gain[_radial_bins(shape)].astype(np.float32))
    return torch.fft.irfft2(torch.fft.rfft2(images) * gains, s=shape)


def neighbour_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, anchor: torch.Tensor | None,
                   bands: list[np.ndarray | None]) -> torch.Tensor:
    """Masked squared error against the neighbours' mean; with a base model, only in the shared bands.

    ``bands`` (per example, a radial profile from ``shared_bands``) is 1 where the neighbours show the
    slice's detail and 0 where they do not: there the base model's output (``anchor``) is kept, so
    detail that changes from slice to slice is neither taught away (blur) nor amplified. Pixels within
    ``TRANSFER_BORDER`` of a crop's edge are left out (the FFT wraps around).
    """
    if anchor is None:
        return ((output - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)
    inner = torch.zeros_like(mask)
    inner[..., TRANSFER_BORDER:-TRANSFER_BORDER, TRANSFER_BORDER:-TRANSFER_BORDER] = 1.0
    fitted = torch.cat([filtered(e[None], b) for e, b in zip(output - target, bands)])
    kept = torch.cat([filtered(d[None], 1.0 - b) for d, b in zip(output - anchor, bands)])
    fitted_loss = (fitted ** 2 * mask * inner).sum() / (mask * inner).sum().clamp_min(1.0)
    return fitted_loss + (kept ** 2 * inner).sum() / inner.sum()


def shared_bands(transfer: np.ndarray) -> np.ndarray:
    """Where a neighbour target may teach: 1 where the transfer is at least ``SHARED_FULL`` (the
    neighbours' mean shows 90 % or more of the slice's detail, so fitting it blurs by 10 % at most), 0
    below ``SHARED_NONE``, linear between. The thresholds were chosen, not calibrated; the one pair tried
    is in ``docs/engine.md``."""
    return np.clip((transfer - SHARED_NONE) / (SHARED_FULL - SHARED_NONE), 0.0, 1.0)


def target_and_mask(series: Series, pair: Pair, window) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours' mean (network units) and where it shows the source's anatomy.

    The mask compares the two neighbours with each other, never with the source: a mask drawn from the
    source's own noise keeps the pixels whose noise the target happens to share, and teaches the network
    to keep noise. For independent Gaussian noise the neighbours' difference is also independent of
    their mean, so the mask does not bias the target either.
    """
    before, after = pair[1]
    target = (series.x[before][window] + series.x[after][window]) / 2
    mask = matched(series.hu[before][window], series.hu[after][window], series.threshold)
    mask &= ~edges(series.hu[before][window], series.hu[after][window])
    return target, mask


class NeighbourTrainer:
    """Trains ``network`` in place on the series' neighbour pairs; keeps the state best on the held-out pairs.

    ``base`` (the model fine-tuned from, frozen) keeps its low-frequency correction: the target's band
    below ``LOW_PASS_PX`` is the base model's output on the neighbours, not the neighbours themselves.
    A bias the neighbours share (photon starvation) is invisible to a neighbour target, and a
    fine-tuning on the raw target unlearns the base model's correction of it (measured: +3.7 HU of
    low-frequency error at 150 HU); noise the neighbours do not share still differs in the base model's
    outputs, so that band is still learnt from the scan. None: raw targets (training from scratch).
    """

    def __init__(self, network: torch.nn.Module, series: list[Series], seed: int,
                 base: torch.nn.Module | None = None, learning_rate: float = LEARNING_RATE,
                 max_denoised: int = MAX_DENOISED_SLICES, cancel=None) -> None:
        self.network, self.series, self.base = network, series, base
        chosen = [chosen_pairs(s.pairs, max_denoised) if base is not None else s.pairs for s in series]
        self.denoised = {} if base is None else denoise_once(base.eval(), series, chosen, cancel)
        train_with_frozen_batch_norm(network)  # batch norm keeps the base model's statistics
        self.pairs = [(s, pair) for s, pairs in zip(series, chosen) for pair in pairs]
        self.bands = {id(s): shared_bands(self._transfer(s, pairs)) if base is not None else None
                          for s, pairs in zip(series, chosen)}
        self.validation = [(*self._held_out(s, pair), self.bands[id(s)]) for s in series for pair in s.held_out]
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.learning_rate = learning_rate
        self.optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=learning_rate)
        self.step = self.best_step = self.stale = 0
        self.initial_loss = self.best_loss = self.validation_loss()
        self.best_state = copy.deepcopy(network.state_dict())
        self.recent_losses: list[float] = []

    def fit(self, max_steps: float = math.inf, seconds: float = math.inf, cancel=None,
            before_step: Callable[[float], None] | None = None,
            after_step: Callable[[NeighbourTrainer, float], None] | None = None) -> dict:
        """Train until ``max_steps`` (in all), ``seconds`` (this call) or the held-out loss stops improving.

        ``before_step(elapsed)`` and ``after_step(trainer, elapsed)`` let callers keep snapshots, show
        progress and write checkpoints. Cancelling raises ``Cancelled`` before the next step.
        """
        started = time.perf_counter()
        while self.step < max_steps and time.perf_counter() - started < seconds and self.stale < PATIENCE:
            if before_step is not None:
                before_step(time.perf_counter() - started)
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"self-supervised training cancelled at step {self.step}")
            self.recent_losses = (self.recent_losses + [self.train_step()])[-10:]
            self.step += 1
            if self.step % VALIDATE_EVERY == 0:
                self.validate()
            if after_step is not None:
                after_step(self, time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        return {"steps": self.step, "seconds": round(elapsed, 1), "validation_loss_before": self.initial_loss,
                "validation_loss_best": self.best_loss, "best_step": self.best_step,
                "stopped_early": self.stale >= PATIENCE,
                "train_loss_last": float(np.mean(self.recent_losses)) if self.recent_losses else None,
                "neighbour_pairs": len(self.pairs), "held_out_pairs": len(self.validation)}

    def validate(self) -> float:
        loss = self.validation_loss()
        if loss < self.best_loss * (1 - MIN_GAIN):
            self.best_loss, self.best_step, self.stale = loss, self.step, 0
            self.best_state = copy.deepcopy(self.network.state_dict())
        else:
            self.stale += 1
        return loss

    def train_step(self) -> float:
        inputs, targets, masks, anchors, bands = self.batch()
        for group in self.optimizer.param_groups:  # warm up: Adam's first steps move every weight by the full rate
            group["lr"] = self.learning_rate * min(1.0, (self.step + 1) / WARMUP_STEPS)
        loss = neighbour_loss(self.network(inputs), targets, masks, anchors, bands)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list]:
        picked, bands = [], []
        for _ in range(BATCH):
            series, pair = self.pairs[self.rng.integers(len(self.pairs))]
            flips = self.rng.integers(2, size=2)
            picked.append([_flipped(a, flips) for a in self.example(series, pair, self._crop(series, pair[0]))])
            bands.append(self.bands[id(series)])
        stacked = [torch.from_numpy(np.stack([p[k] for p in picked])[:, None].astype(np.float32)) for k in range(3)]
        anchors = None
        if self.base is not None:  # the base model on the same crops (its whole-slice output differs at crop borders)
            with torch.no_grad():
                anchors = self.base(stacked[0])
        return (*stacked, anchors, bands)

    def example(self, series: Series, pair: Pair, window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input, target, mask) of one pair in ``window``: with a base model, its low band and its mask."""
        if self.base is None:
            return (series.x[pair[0]][window], *target_and_mask(series, pair, window))
        target, mask = self._anchored(series, pair, window)
        return series.x[pair[0]][window], target, mask

    def _anchored(self, series: Series, pair: Pair, window) -> tuple[np.ndarray, np.ndarray]:
        """The target with the base model's low band, and the mask drawn from the base model's outputs.

        Denoised, the slice and its neighbours show where the anatomy differs at a few pixels' scale
        (a small bone, a vessel, an edge that moves), which raw slices at high noise hide: measured at
        150 HU, a mask from raw neighbours let the adapted copy darken bone by 200 HU. The base model's
        outputs carry little of the source's noise, so the mask hardly depends on it.
        """
        denoised = np.stack([self.denoised[id(series), i][window] for i in (pair[0], *pair[1])])
        neighbours = (series.x[pair[1][0]][window] + series.x[pair[1][1]][window]) / 2
        denoised_neighbours = denoised[1:].mean(axis=0)
        target = neighbours + ndimage.gaussian_filter(denoised_neighbours - neighbours, LOW_PASS_PX)
        scale = np.float32(series.hu_scale)
        return target, matched(denoised[0] * scale, denoised_neighbours * scale, MASK_HU, DENOISED_WINDOW)

    def _crop(self, series: Series, index: int) -> tuple[slice, slice]:
        """A crop, redrawn (a few times) until it is mostly body, where the noise is."""
        rows, cols = series.x.shape[1:]
        crop_r, crop_c = min(CROP, rows), min(CROP, cols)
        for _ in range(8):
            r, c = int(self.rng.integers(rows - crop_r + 1)), int(self.rng.integers(cols - crop_c + 1))
            if (series.hu[index, r:r + crop_r, c:c + crop_c] > BODY_HU).mean() > 0.5:
                break
        return slice(r, r + crop_r), slice(c, c + crop_c)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Masked squared error of the network's output on held-out slices against their neighbours
        (with a base model, in the shared bands only: elsewhere the neighbours are no fair target)."""
        self.network.eval()
        total, count = 0.0, 0.0
        for source, target, mask, band in self.validation:
            error = self.network(torch.from_numpy(source[None, None])) - torch.from_numpy(target[None, None])
            error = (error if band is None else filtered(error, band)).numpy()[0, 0]
            total += float(((error ** 2) * mask).sum())
            count += float(mask.sum())
        train_with_frozen_batch_norm(self.network)
        return total / max(count, 1.0)

    def _transfer(self, series: Series, pairs: list[Pair]) -> np.ndarray:
        """The series' detail transfer, from the base model's outputs (denoised once)."""
        def kept(pair: Pair) -> np.ndarray:
            whole = (slice(None), slice(None))
            body = ndimage.binary_erosion(series.hu[pair[0]] > BODY_HU, iterations=TRANSFER_BORDER)
            return self._anchored(series, pair, whole)[1] & body

        return detail_transfer(lambda i: self.denoised[id(series), i], pairs, kept)

    def _held_out(self, series: Series, pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A held-out slice with its whole-slice target and mask (in the body), made once."""
        source, target, mask = self.example(series, pair, (slice(None), slice(None)))
        return source, target, mask & (series.hu[pair[0]] > BODY_HU)

    def best_network(self) -> torch.nn.Module:
        """The network in its best validated state (the one it is trained from is not kept)."""
        self.network.load_state_dict(self.best_state)
        return self.network.eval()

    def state(self) -> dict:
        """Everything needed to continue exactly (tensors, numbers and strings: loads with ``weights_only``)."""
        return {"generator": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "best_generator": self.best_state, "step": self.step, "best_step": self.best_step,
                "stale": self.stale, "initial_loss": self.initial_loss, "best_loss": self.best_loss,
                "rng": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state()}

    def restore(self, state: dict) -> None:
        self.network.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state = state["best_generator"]
        self.step, self.best_step, self.stale = state["step"], state["best_step"], state["stale"]
        self.initial_loss, self.best_loss = state["initial_loss"], state["best_loss"]
        self.rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])


def chosen_pairs(pairs: list[Pair], limit: int) -> list[Pair]:
    """The pairs whose slices the base model denoises once: all, or evenly spread runs of neighbouring
    sources (a run of n sources needs only n + 2 offset slices) within ``limit`` slices."""
    def needed(chosen: list[Pair]) -> int:
        return len({i for source, targets in chosen for i in (source, *targets)})

    if needed(pairs) <= limit:
        return pairs
    runs = [pairs[i:i + RUN] for i in range(0, len(pairs), RUN)]
    for count in range(len(runs), 0, -1):
        picked = sorted(set(np.linspace(0, len(runs) - 1, count).round().astype(int)))
        chosen = [pair for k in picked for pair in runs[k]]
        if needed(chosen) <= limit:
            return chosen
    return pairs[:1]


@torch.no_grad()
def denoise_once(base: torch.nn.Module, series: list[Series], chosen: list[list[Pair]],
                 cancel) -> dict[tuple[int, int], np.ndarray]:
    """The base model's output of every slice the chosen and held-out pairs use, by (id(series), slice).

    Whole slices, once: no crop border in the mask or the low band, and no base pass in a training step.
    """
    denoised = {}
    for one, pairs in zip(series, chosen):
        for index in sorted({i for source, targets in pairs + one.held_out for i in (source, *targets)}):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("self-supervised training cancelled while the base model denoised its slices")
            denoised[id(one), index] = base(torch.from_numpy(one.x[index][None, None])).numpy()[0, 0]
    return denoised


def _flipped(array: np.ndarray, flips: np.ndarray) -> np.ndarray:
    axes = tuple(axis for axis, flip in enumerate(flips) if flip)
    return np.ascontiguousarray(np.flip(array, axes)) if axes else array
