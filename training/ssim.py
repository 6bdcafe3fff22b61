"""SSIM as a differentiable loss: the Wang et al. window of ``LDCTDenoiseLib.compare.metrics``, in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from LDCTDenoiseLib.compare.metrics import SSIM_RADIUS, SSIM_SIGMA, ssim_from_blur


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS, dtype=torch.float64) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim_map(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """Local SSIM of (N, 1, H, W) images, valid part only: ``compare.metrics.ssim_map``, differentiable."""
    g = gaussian_window(dtype=x.dtype).to(x.device)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    return ssim_from_blur(blur, x, y, data_range)


def ssim_loss(output: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """1 - mean SSIM (Wang et al. window), computed in fp32 whatever the autocast."""
    with torch.autocast(output.device.type, enabled=False):
        return 1.0 - ssim_map(output.float(), target.float(), data_range).mean()
