"""StructKPN (Xu et al., ICIP 2021, doi 10.1109/ICIP42928.2021.9506679): a kernel prediction network.

A residual CNN predicts, for every pixel, a k x k kernel (softmax-normalised, so flat regions keep
their mean HU); a local convolution applies each pixel's own kernel to the input's k x k
neighbourhood. The filter therefore varies across the image: wide where the tissue is flat, narrow
along edges. Its structure-aware loss lives with the method's training code
(``training.methods.structkpn``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import DenoisingNetwork, NetworkConfig


@dataclass(frozen=True)
class StructKpnConfig(NetworkConfig):
    in_channels: int = 1
    width: int = 32
    blocks: int = 6
    kernel_size: int = 5

    def problems(self) -> list[str]:
        found = super().problems()
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            found.append(f"kernel_size must be odd and positive; got {self.kernel_size}")
        if self.width < 1 or self.blocks < 0:
            found.append(f"width must be >= 1 and blocks >= 0; got {self.width} and {self.blocks}")
        return found


def local_convolution(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``out[n, 0, y, x] = sum_ij kernels[n, i*k + j, y, x] * image[n, 0, y + i - r, x + j - r]`` (replicate edges)."""
    count = kernels.shape[1]
    size = math.isqrt(int(count))  # int(): a plain number also while the ONNX exporter traces shapes
    if size * size != count or image.shape[1] != 1:
        raise ValueError(f"need one image channel and k*k kernel channels; got {image.shape[1]} and {count}")
    radius = size // 2
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    patches = F.unfold(padded, size).view(image.shape[0], count, *image.shape[-2:])
    return (patches * kernels).sum(dim=1, keepdim=True)


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class StructKPN(DenoisingNetwork):
    def __init__(self, config: StructKpnConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or StructKpnConfig()
        self.features = nn.Sequential(
            nn.Conv2d(c.in_channels, c.width, 3, padding=1),
            nn.ReLU(inplace=True),
            *(ResidualBlock(c.width) for _ in range(c.blocks)),
        )
        self.kernel_head = nn.Conv2d(c.width, c.kernel_size**2, 3, padding=1)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel kernels (N, k*k, H, W), each summing to one (for figures and the loss)."""
        return torch.softmax(self.kernel_head(self.features(x)).float(), dim=1).to(x.dtype)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return local_convolution(x, self.kernels(x)) - x
