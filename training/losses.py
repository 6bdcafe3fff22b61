"""The supervised terms every method can weigh (L1, SSIM, MSE, perceptual, structure-aware).

The adversarial losses live with their methods: WGAN-GP in ``methods/wgan_vgg``, the PatchGAN and
CycleGAN terms in ``methods/pix2pix`` and ``methods/cyclegan``, stage 2's structure term in ``methods/hu2024``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig
from .methods.structkpn.loss import structure_aware_loss
from .ssim import ssim_loss


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
