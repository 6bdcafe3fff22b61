"""The WGAN-GP step: ``critic_steps`` critic updates, each on a fresh batch, then one generator update on
the last. On unaligned pairs (Hu et al.'s stage 2) the generator sees the critic and the structure
term; on aligned pairs (stage ``gan``: WGAN-VGG, WGAN-MSE) the supervised terms too."""

from __future__ import annotations

import torch

from ...losses import supervised_loss
from ..hu2024.loss import structure_loss
from ..step import TrainingStep, floats
from .critic import Critic
from .loss import critic_loss, generator_adversarial_loss


def critic_batches(config) -> int:
    return config.optim.critic_steps


def wasserstein_step(trainer, batches: list[dict]) -> dict[str, float]:
    weights = trainer.config.loss
    for batch in batches:
        noisy, clean = batch["input"].to(trainer.device), batch["target"].to(trainer.device)
        with torch.no_grad(), trainer.autocast():
            fake = trainer.generator(noisy).float()
        epsilon = torch.rand(clean.shape[0], 1, 1, 1, generator=trainer.epsilon_rng).to(trainer.device)
        critic_terms = critic_loss(trainer.critic, clean, fake, epsilon, weights.gradient_penalty)
        trainer.update(trainer.c_optimizer, critic_terms["critic"])
    with trainer.autocast():
        fake = trainer.generator(noisy).float()
        adversarial = generator_adversarial_loss(trainer.critic, fake)
        loss = weights.adversarial * adversarial
        if weights.structure > 0:
            loss = loss + weights.structure * structure_loss(fake, noisy, weights.structure_sigma_px)
        supervised = {}
        if trainer.config.stage == "gan":  # aligned pairs: the supervised terms apply to the last batch
            supervised = supervised_loss(fake, clean, weights, trainer.features)
            loss = loss + supervised.pop("loss")
    trainer.update(trainer.g_optimizer, loss)
    return floats({"generator": loss, "adversarial": adversarial, **critic_terms, **supervised})


def critic(trainer, entry) -> None:
    trainer.critic = trainer.wrap(Critic(trainer.config.data.crop))


WASSERSTEIN = TrainingStep(wasserstein_step, critic_batches, critic)
STEPS = {"gan": WASSERSTEIN}
