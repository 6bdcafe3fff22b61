"""Pix2Pix's conditional GAN terms: the discriminator judges (LDCT, image) pairs, with a cross-entropy loss.

The generator's objective is ``GAN + lambda * L1`` (lambda 100 on the paper's [-1, 1] images; the
preset's L1 weight restates it for this project's normalisation); the L1 term is the trainer's
supervised ``l1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _judge(discriminator: nn.Module, ldct: Tensor, image: Tensor, real: bool) -> Tensor:
    scores = discriminator(torch.cat([ldct, image], 1).float())
    return F.binary_cross_entropy_with_logits(scores, torch.full_like(scores, float(real)))


def discriminator_loss(discriminator: nn.Module, ldct: Tensor, ndct: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """Half the sum of the real pair's and the fake pair's cross-entropy (the paper halves D's rate)."""
    real, made = _judge(discriminator, ldct, ndct, True), _judge(discriminator, ldct, fake.detach(), False)
    return {"critic": 0.5 * (real + made), "d_real": real.detach(), "d_fake": made.detach()}


def generator_gan_loss(discriminator: nn.Module, ldct: Tensor, fake: Tensor) -> Tensor:
    return _judge(discriminator, ldct, fake, True)
