"""Losses of every stage: supervised terms (L1, SSIM, MSE, perceptual, structure-aware), WGAN-GP critic, generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from LDCTDenoiseLib.metrics import SSIM_RADIUS, SSIM_SIGMA, ssim_from_blur

from .config import LossConfig


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS, dtype=torch.float64) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim_map(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """Local SSIM of (N, 1, H, W) images, valid part only: ``LDCTDenoiseLib.metrics.ssim_map``, differentiable."""
    g = gaussian_window(dtype=x.dtype).to(x.device)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    return ssim_from_blur(blur, x, y, data_range)


def ssim_loss(output: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """1 - mean SSIM (Wang et al. window), computed in fp32 whatever the autocast."""
    with torch.autocast(output.device.type, enabled=False):
        return 1.0 - ssim_map(output.float(), target.float(), data_range).mean()


def perceptual_loss(features: nn.Module, output: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference of VGG-19 features (target features carry no gradient)."""
    with torch.no_grad():
        wanted = features(target)
    return F.mse_loss(features(output), wanted)


def supervised_loss(
    output: Tensor, target: Tensor, weights: LossConfig, features: nn.Module | None
) -> dict[str, Tensor]:
    """The weighted sum of the supervised terms with a non-zero weight, each term reported.

    Hu et al.'s pretraining is ``L1 + 2 (1 - SSIM) + perceptual``; the U-Net and the *-MSE ablations
    use MSE; WGAN-VGG 0.1 x perceptual (beside the adversarial term); StructKPN its structure-aware loss.
    """
    from .methods.structkpn.loss import structure_aware_loss

    available = {
        "l1": lambda: F.l1_loss(output, target),
        "ssim": lambda: ssim_loss(output, target),
        "mse": lambda: F.mse_loss(output, target),
        "perceptual": lambda: perceptual_loss(features, output, target),
        "structure_aware": lambda: structure_aware_loss(output, target),
    }
    terms = {name: term() for name, term in available.items()
             if getattr(weights, name) > 0 and (name != "perceptual" or features is not None)}
    terms["loss"] = sum((getattr(weights, name) * value for name, value in terms.items()), output.new_zeros(()))
    return terms


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


def structure_loss(output: Tensor, source: Tensor, sigma_px: float) -> Tensor:
    """L1 between low-pass versions of G(LDCT) and the LDCT: keeps anatomy, lets noise go."""
    radius = max(1, int(3 * sigma_px + 0.5))
    g = gaussian_window(sigma_px, radius, dtype=output.dtype).to(output.device)

    def blur(image: Tensor) -> Tensor:
        image = F.pad(image, (radius, radius, radius, radius), mode="replicate")
        return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    return F.l1_loss(blur(output), blur(source))


def generator_adversarial_loss(critic: nn.Module, fake: Tensor) -> Tensor:
    return -critic(fake.float()).mean()
