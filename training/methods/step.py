"""What a method's training step is to the trainer: the batches it takes, what it does, what it trains against.

Each method folder's ``step.py`` names the stages it owns in ``STEPS``; the trainer finds a stage's
step through ``training.methods.training_step`` and holds no method's code. A step's ``run`` gets the
trainer (its models, optimisers, ``update``, ``autocast``, ``device``, ``config``) and the step's
batches, and returns the terms it reports; ``adversaries`` sets the trainer's critic (and, for
CycleGAN, the inverse generator, its critic and the pools of fakes) before the optimisers are made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig


def one_batch(config: TrainConfig) -> int:
    return 1


@dataclass(frozen=True)
class TrainingStep:
    run: Callable[..., dict[str, float]]  # (trainer, batches) -> the step's reported terms
    batches: Callable[[TrainConfig], int] = one_batch  # batches one step takes
    adversaries: Callable[..., None] | None = None  # (trainer, architecture entry): sets trainer.critic, ...


def floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """A step's reported terms as plain numbers (for the log and the progress bar)."""
    return {name: float(value.detach()) for name, value in terms.items()}
