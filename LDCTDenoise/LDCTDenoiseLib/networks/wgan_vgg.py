"""The generator of WGAN-VGG (Yang et al., IEEE TMI 2018;37(6):1348-1357, doi 10.1109/TMI.2018.2827462).

Eight 3x3 convolutions, 32 channels in the seven hidden layers, ReLU after each, no pooling, no skip.
The network outputs the image; its correction for the engine is that output minus the input. One
deviation: no ReLU after the last convolution. With PyTorch's initialisation the output starts near
zero, and a ReLU there passed no gradient at all (measured: the loss did not move in six steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import DenoisingNetwork, NetworkConfig


@dataclass(frozen=True)
class WganVggConfig(NetworkConfig):
    in_channels: int = 1
    width: int = 32
    layers: int = 8

    def problems(self) -> list[str]:
        found = super().problems()
        if self.width < 1 or self.layers < 2:
            found.append(f"width must be >= 1 and layers >= 2; got {self.width} and {self.layers}")
        return found


class WganVggGenerator(DenoisingNetwork):
    def __init__(self, config: WganVggConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or WganVggConfig()
        channels = [c.in_channels] + [c.width] * (c.layers - 1) + [c.in_channels]
        layers: list[nn.Module] = []
        for before, after in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(before, after, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers[:-1])

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) - x
