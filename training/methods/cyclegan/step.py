"""CycleGAN's step: both generators (G: LDCT to NDCT, F back), then both discriminators on pooled fakes."""

from __future__ import annotations

from ..pix2pix.patchgan import FakePool, PatchGan
from ..step import TrainingStep, floats
from . import loss as cyclegan_loss


def cyclegan_step(trainer, batches: list[dict]) -> dict[str, float]:
    (batch,) = batches
    x, y = batch["input"].to(trainer.device), batch["target"].to(trainer.device)
    weights = trainer.config.loss
    with trainer.autocast():
        terms = cyclegan_loss.generator_terms(trainer.generator, trainer.inverse, trainer.critic, trainer.critic_x,
                                              x, y, weights.cycle, weights.identity)
    fake_y, fake_x = terms.pop("fake_y"), terms.pop("fake_x")
    trainer.update(trainer.g_optimizer, terms["loss"])
    with trainer.autocast():
        judged_y = cyclegan_loss.discriminator_loss(trainer.critic, y, trainer.pools[0](fake_y))
        judged_x = cyclegan_loss.discriminator_loss(trainer.critic_x, x, trainer.pools[1](fake_x))
    trainer.update(trainer.c_optimizer, judged_y + judged_x)
    return floats({"generator": terms.pop("loss"), **terms, "d_y": judged_y, "d_x": judged_x})


def adversaries(trainer, entry) -> None:
    """D_Y, and F (NDCT to LDCT) with its D_X, and the pools of earlier fakes."""
    config = trainer.config
    trainer.critic = trainer.wrap(PatchGan(1, norm="instance"))
    trainer.inverse = trainer.wrap(entry.build(config.network_config))
    trainer.critic_x = trainer.wrap(PatchGan(1, norm="instance"))
    trainer.pools = [FakePool(config.optim.fake_pool, trainer.epsilon_rng) for _ in range(2)]


STEPS = {"cyclegan": TrainingStep(cyclegan_step, adversaries=adversaries)}
