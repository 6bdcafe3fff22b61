"""CycleGAN's generator (Zhu et al., ICCV 2017; the ResNet generator of Johnson et al., ECCV 2016).

c7s1-64, d128, d256, nine residual blocks of 256, u128, u64, c7s1-1: reflection padding, instance
normalisation (no affine, convs with bias) and ReLU, as the authors' reference implementation
builds it (11.378 M parameters for RGB at width 64). The papers' last layer is a tanh that outputs
the image; ``residual: true`` replaces it by a plain conv whose output is added to the input (the
correction is learnt, as this project's short budgets need), zero-initialised so that training
starts from the identity. Instance norm normalises each image by
its own statistics, so a whole slice is normalised differently from a training crop: a known trait
of the architecture, kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import ImageOrCorrectionNetwork, NetworkConfig


@dataclass(frozen=True)
class CycleGanConfig(NetworkConfig):
    in_channels: int = 1
    base_width: int = 64
    blocks: int = 9
    residual: bool = False

    def problems(self) -> list[str]:
        found = super().problems()
        if self.base_width < 1 or self.blocks < 0:
            found.append(f"base_width must be >= 1 and blocks >= 0; got {self.base_width} and {self.blocks}")
        return found


def _conv_norm_relu(before: int, after: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    padding = [nn.ReflectionPad2d(kernel // 2)] if stride == 1 else []
    return [*padding, nn.Conv2d(before, after, kernel, stride=stride, padding=0 if stride == 1 else 1),
            nn.InstanceNorm2d(after), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_norm_relu(width, width, 3),
                                  nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(ImageOrCorrectionNetwork):
    def __init__(self, config: CycleGanConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CycleGanConfig()
        w = c.base_width
        layers = [*_conv_norm_relu(c.in_channels, w, 7), *_conv_norm_relu(w, 2 * w, 3, 2),
                  *_conv_norm_relu(2 * w, 4 * w, 3, 2), *(ResidualBlock(4 * w) for _ in range(c.blocks))]
        for before, after in ((4 * w, 2 * w), (2 * w, w)):
            layers += [nn.ConvTranspose2d(before, after, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(after), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, c.in_channels, 7)]
        self.body = nn.Sequential(*layers)
        self._set_output(layers[-1])

    @property
    def size_multiple(self) -> int:
        return 8  # two stride-2 levels, and the blocks' reflection padding needs at least 2 pixels below them
