"""Hu et al.'s two stages: stage 1, one supervised update on pixel-aligned pairs (every supervised method's
step), and stage 2, WGAN-GP on unaligned pairs with WGAN-VGG's critic (``wgan_vgg.step``)."""

from __future__ import annotations

from ...losses import supervised_loss
from ..step import TrainingStep, floats
from ..wgan_vgg.step import WASSERSTEIN


def supervised_step(trainer, batches: list[dict]) -> dict[str, float]:
    """One generator update on one batch of aligned pairs (``trainer``: the ``training.trainer.Trainer``)."""
    (batch,) = batches
    if "params" in batch and trainer.processes.is_main:
        trainer.record_samples(batch["params"])
    noisy, clean = batch["input"].to(trainer.device), batch["target"].to(trainer.device)
    with trainer.autocast():
        terms = supervised_loss(trainer.generator(noisy).float(), clean, trainer.config.loss, trainer.features)
    trainer.update(trainer.g_optimizer, terms["loss"])
    return floats(terms)


STEPS = {"stage1": TrainingStep(supervised_step), "stage2": WASSERSTEIN}
