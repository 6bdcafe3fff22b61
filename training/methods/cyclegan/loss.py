"""CycleGAN's terms: least-squares GAN for both directions, cycle consistency and identity (L1).

G maps LDCT to NDCT, F maps back; D_Y judges NDCT, D_X LDCT. The generators' objective is
``LSGAN(D_Y(G(x))) + LSGAN(D_X(F(y))) + cycle * (|F(G(x)) - x| + |G(F(y)) - y|)
+ identity * (|G(y) - y| + |F(x) - x|)``; no term compares an LDCT with its NDCT, so pairs need not match.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def least_squares(scores: Tensor, real: bool) -> Tensor:
    return F.mse_loss(scores.float(), scores.new_full(scores.shape, float(real)).float())


def discriminator_loss(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * (least_squares(discriminator(real), True) + least_squares(discriminator(fake.detach()), False))


def generator_terms(forward: nn.Module, backward: nn.Module, judge_y: nn.Module, judge_x: nn.Module,
                    x: Tensor, y: Tensor, cycle: float, identity: float) -> dict[str, Tensor]:
    """The generators' loss and its terms; ``fake_y`` and ``fake_x`` are returned for the discriminators."""
    fake_y, fake_x = forward(x), backward(y)
    adversarial = least_squares(judge_y(fake_y), True) + least_squares(judge_x(fake_x), True)
    cycled = F.l1_loss(backward(fake_y).float(), x) + F.l1_loss(forward(fake_x).float(), y)
    loss = adversarial + cycle * cycled
    terms = {"adversarial": adversarial, "cycle": cycled}
    if identity > 0:
        terms["identity"] = F.l1_loss(forward(y).float(), y) + F.l1_loss(backward(x).float(), x)
        loss = loss + identity * terms["identity"]
    return {"loss": loss, **terms, "fake_y": fake_y, "fake_x": fake_x}
