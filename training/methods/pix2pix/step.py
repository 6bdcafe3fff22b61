"""Pix2Pix's step: the PatchGAN discriminator on the detached fake, then the generator against it (L1 beside)."""

from __future__ import annotations

from ...losses import supervised_loss
from ..step import TrainingStep, floats
from . import loss as pix2pix_loss
from .patchgan import PatchGan


def pix2pix_step(trainer, batches: list[dict]) -> dict[str, float]:
    (batch,) = batches
    noisy, clean = batch["input"].to(trainer.device), batch["target"].to(trainer.device)
    with trainer.autocast():
        fake = trainer.generator(noisy).float()
    judged = pix2pix_loss.discriminator_loss(trainer.critic, noisy, clean, fake)
    trainer.update(trainer.c_optimizer, judged.pop("critic"))
    with trainer.autocast():
        adversarial = pix2pix_loss.generator_gan_loss(trainer.critic, noisy, fake)
        supervised = supervised_loss(fake, clean, trainer.config.loss, trainer.features)
        loss = trainer.config.loss.adversarial * adversarial + supervised.pop("loss")
    trainer.update(trainer.g_optimizer, loss)
    return floats({"generator": loss, "adversarial": adversarial, **supervised, **judged})


def discriminator(trainer, entry) -> None:
    trainer.critic = trainer.wrap(PatchGan(2, norm="batch"))


STEPS = {"pix2pix": TrainingStep(pix2pix_step, adversaries=discriminator)}
