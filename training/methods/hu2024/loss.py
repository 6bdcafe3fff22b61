"""Stage 2's structure term (this project's addition to Hu et al.'s WGAN-GP on unaligned pairs)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...ssim import gaussian_window


def structure_loss(output: Tensor, source: Tensor, sigma_px: float) -> Tensor:
    """L1 between low-pass versions of G(LDCT) and the LDCT: keeps anatomy, lets noise go."""
    radius = max(1, int(3 * sigma_px + 0.5))
    g = gaussian_window(sigma_px, radius, dtype=output.dtype).to(output.device)

    def blur(image: Tensor) -> Tensor:
        image = F.pad(image, (radius, radius, radius, radius), mode="replicate")
        return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    return F.l1_loss(blur(output), blur(source))
