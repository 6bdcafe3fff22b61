"""WGAN-GP (Gulrajani et al. 2017) as WGAN-VGG uses it, and Hu et al.'s stage 2 after it: the critic's
loss with its gradient penalty, and the generator's adversarial term."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, epsilon: Tensor) -> Tensor:
    """``E[(||grad D(x_hat)|| - 1)^2]`` at ``x_hat = eps * real + (1 - eps) * fake`` (Gulrajani et al.)."""
    mixed = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(
    critic: nn.Module, real: Tensor, fake: Tensor, epsilon: Tensor, penalty_weight: float
) -> dict[str, Tensor]:
    """``-E[D(ndct)] + E[D(G(ldct))] + lambda * GP``; one critic pass over real, fake and mixed.

    One pass (the critic has no batch norm, so this equals three passes) keeps DistributedDataParallel
    to a single forward per backward.
    """
    n = real.shape[0]
    mixed = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        scores = critic(torch.cat([real, fake, mixed]).float())
        (grad,) = torch.autograd.grad(scores[2 * n :].sum(), mixed, create_graph=True)
        penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    wasserstein = scores[:n].mean() - scores[n : 2 * n].mean()
    return {
        "critic": -wasserstein + penalty_weight * penalty,
        "wasserstein": wasserstein.detach(),
        "gp": penalty.detach(),
    }


def generator_adversarial_loss(critic: nn.Module, fake: Tensor) -> Tensor:
    return -critic(fake.float()).mean()
