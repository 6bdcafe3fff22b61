"""The critic of stage 2 (Yang et al. 2018, WGAN-VGG): six 3x3 convs with LeakyReLU, two FC layers.

No batch normalisation (the gradient penalty is per sample) and no sigmoid (a Wasserstein critic
outputs a score, not a probability).
"""

from __future__ import annotations

from torch import Tensor, nn

WIDTHS = (64, 64, 128, 128, 256, 256)
STRIDES = (1, 2, 1, 2, 1, 2)


class Critic(nn.Module):
    def __init__(self, crop: int = 128, in_channels: int = 1, hidden: int = 1024, slope: float = 0.2) -> None:
        super().__init__()
        downsampling = 2 ** STRIDES.count(2)
        if crop % downsampling:
            raise ValueError(f"the critic's crop size must be a multiple of {downsampling}; got {crop}")
        layers: list[nn.Module] = []
        channels = in_channels
        for width, stride in zip(WIDTHS, STRIDES, strict=True):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.LeakyReLU(slope)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * (crop // downsampling) ** 2, hidden),
            nn.LeakyReLU(slope),
            nn.Linear(hidden, 1),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.features(image)).squeeze(1)
