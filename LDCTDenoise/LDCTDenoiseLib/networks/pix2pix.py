"""Pix2Pix's generator (Isola et al., CVPR 2017): the U-Net of its reference implementation.

``depth`` 4x4 stride-2 convolutions down (64, 128, 256, 512, 512, ...; LeakyReLU 0.2, batch norm
except the first and the innermost), as many 4x4 transposed convolutions up (ReLU, batch norm,
dropout 0.5 in the three deepest 512 levels), skips by concatenation (``unet_256``: depth 8, 54.414 M
parameters for RGB; ``unet_128``: depth 7). The paper keeps dropout at test time as its noise source;
here eval mode turns it off, so one input gives one output. Output as in CycleGAN's generator: tanh
image, or with ``residual: true`` a correction added to the input, the last layer zero-initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import ImageOrCorrectionNetwork, NetworkConfig


@dataclass(frozen=True)
class Pix2PixConfig(NetworkConfig):
    in_channels: int = 1
    base_width: int = 64
    depth: int = 8
    dropout: float = 0.5
    residual: bool = False

    def problems(self) -> list[str]:
        found = super().problems()
        if self.base_width < 1 or not 5 <= self.depth <= 9:
            found.append(f"base_width must be >= 1 and depth in 5..9; got {self.base_width} and {self.depth}")
        if not 0 <= self.dropout < 1:
            found.append(f"dropout must lie in [0, 1); got {self.dropout}")
        return found


class SkipBlock(nn.Module):
    """One level: down, the inner levels, up, then the level's input concatenated (not at the outermost)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, outermost: bool = False,
                 dropout: float = 0.0, in_channels: int | None = None) -> None:
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=False)
        up_in = inner if sub is None else 2 * inner
        if outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1)]
        else:
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(outer)]
            if sub is None:
                layers = [nn.LeakyReLU(0.2, True), down, *up]
            else:
                layers = [nn.LeakyReLU(0.2, True), down, nn.BatchNorm2d(inner), sub, *up]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if self.outermost else torch.cat([x, out], 1)


class Pix2PixGenerator(ImageOrCorrectionNetwork):
    def __init__(self, config: Pix2PixConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or Pix2PixConfig()
        w = c.base_width
        block = SkipBlock(8 * w, 8 * w, None)
        for _ in range(c.depth - 5):
            block = SkipBlock(8 * w, 8 * w, block, dropout=c.dropout)
        for outer in (4 * w, 2 * w, w):
            block = SkipBlock(outer, 2 * outer, block)
        self.body = SkipBlock(c.in_channels, w, block, outermost=True, in_channels=c.in_channels)
        self._set_output(self.body.model[-1])

    @property
    def size_multiple(self) -> int:
        return 2**self.config.depth
