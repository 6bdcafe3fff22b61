"""The U-Net of the transfer-learning study (Zhang et al., QIMS 2023), 24 convolutions.

Contracting path 32 | 32,32 | 64,64 | 128,128 | 256,256 | 512,512 (3x3 convs, 2x2 max pooling between
levels), expansive path four times [3x3 stride-2 transposed conv, concatenation with the skip, two
3x3 convs] at 256, 128, 64, 32 channels, then a 1x1 conv to one channel; LeakyReLU after every conv
but the last. ``residual: true`` (this project's default) adds the input to that output, so the
network learns the correction, as short training budgets need; ``residual: false`` is the plain form
that outputs the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import DenoisingNetwork, NetworkConfig


@dataclass(frozen=True)
class UNetConfig(NetworkConfig):
    in_channels: int = 1
    base_width: int = 32
    depth: int = 4  # poolings; widths base * 2**level, the bottom at base * 2**depth
    negative_slope: float = 0.01
    residual: bool = True

    def problems(self) -> list[str]:
        found = super().problems()
        if self.base_width < 1 or not 1 <= self.depth <= 6:
            found.append(f"base_width must be >= 1 and depth in 1..6; got {self.base_width} and {self.depth}")
        if not 0 <= self.negative_slope < 1:
            found.append(f"negative_slope must lie in [0, 1); got {self.negative_slope}")
        return found


def _conv(before: int, after: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(before, after, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class UNet(DenoisingNetwork):
    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or UNetConfig()
        widths = [c.base_width * 2**level for level in range(c.depth + 1)]
        slope = c.negative_slope
        self.stem = _conv(c.in_channels, widths[0], slope)
        self.down = nn.ModuleList()
        previous = widths[0]
        for width in widths:
            self.down.append(nn.Sequential(_conv(previous, width, slope), _conv(width, width, slope)))
            previous = width
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 3, stride=2, padding=1, output_padding=1)
            for level in reversed(range(c.depth))
        )
        self.merge = nn.ModuleList(
            nn.Sequential(_conv(2 * widths[level], widths[level], slope), _conv(widths[level], widths[level], slope))
            for level in reversed(range(c.depth))
        )
        self.head = nn.Conv2d(widths[0], c.in_channels, 1)
        self.activation = nn.LeakyReLU(slope)

    @property
    def size_multiple(self) -> int:
        return 2**self.config.depth

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        image = x
        x = self.stem(x)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottom level has no skip
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([self.activation(up(x)), skips.pop()], dim=1))
        out = self.head(x)
        return self._as_correction(out, image)
