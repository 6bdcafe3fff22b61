"""The generator of Hu et al. (QIMS 2024): an attention residual U-Net.

Encoder: residual blocks (widths w, 2w, 4w, 8w), each followed by 2x2 max pooling, and a
16w block at the bottom. Decoder: bilinear x2, concatenation with the CBAM-attended skip,
residual block that brings the channels back to the skip's width. Output: input + conv3x3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import DenoisingNetwork, NetworkConfig

MAX_DEPTH = 6  # poolings: a 512-pixel slice is 8 pixels across at the bottom

@dataclass(frozen=True)
class GeneratorConfig(NetworkConfig):
    """Architecture hyper-parameters; the defaults are the paper's."""

    label = "generator"
    in_channels: int = 1
    base_width: int = 32
    depth: int = 4
    cbam_reduction: int = 16

    def problems(self) -> list[str]:
        found = super().problems()
        if not 1 <= self.depth <= MAX_DEPTH:
            found.append(f"depth must lie in 1..{MAX_DEPTH}; got {self.depth}")
        if self.base_width < 1 or self.cbam_reduction < 1:
            found.append(f"base_width and cbam_reduction must be >= 1; got {self.base_width} and "
                         f"{self.cbam_reduction}")
        return found


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN with a projection shortcut (1x1 conv + BN), ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ChannelAttention(nn.Module):
    """sigmoid(FC(avgpool(f)) + FC(maxpool(f))) with one FC shared by both pools."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        avg = self.fc(F.adaptive_avg_pool2d(f, 1))
        peak = self.fc(F.adaptive_max_pool2d(f, 1))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """sigmoid(conv7x7([mean over channels; max over channels]))."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = f * self.channel(f)
        return f * self.spatial(f)


class UpBlock(nn.Module):
    """Bilinear x2, concatenate the attended skip, residual block to the skip's width."""

    def __init__(self, in_channels: int, skip_channels: int, reduction: int) -> None:
        super().__init__()
        self.attention = CBAM(skip_channels, reduction)
        self.block = ResidualBlock(in_channels + skip_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, self.attention(skip)], dim=1))


class Generator(DenoisingNetwork):
    """Attention residual U-Net; maps a normalised LDCT slice to a normalised NDCT slice.

    Any H x W works (``DenoisingNetwork.forward``): the input is padded to a multiple of 2**depth.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        c = self.config
        widths = [c.base_width * 2**level for level in range(c.depth + 1)]
        self.encoders = nn.ModuleList()
        previous = c.in_channels
        for width in widths[:-1]:
            self.encoders.append(ResidualBlock(previous, width))
            previous = width
        self.bottom = ResidualBlock(widths[-2], widths[-1])
        self.decoders = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], c.cbam_reduction)
            for level in reversed(range(c.depth))
        )
        self.head = nn.Conv2d(widths[0], c.in_channels, 3, padding=1)

    @property
    def size_multiple(self) -> int:
        return 2**self.config.depth

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The network's correction (output minus input) for an input of a valid size."""
        first = self.first_level(x)
        return self.last_level(self.inner_levels(first), first)

    # The three parts below are the levels a mixed-precision runtime keeps apart: the full-resolution
    # ones carry HU as small differences on a large offset and need fp32; the inner ones tolerate bf16.
    def first_level(self, x: torch.Tensor) -> torch.Tensor:
        """The full-resolution encoder's features (also the last decoder's skip)."""
        return self.encoders[0](x)

    def inner_levels(self, first: torch.Tensor) -> torch.Tensor:
        """Every level below full resolution, down and back up to the input of the last decoder."""
        x, skips = F.max_pool2d(first, 2), []
        for encoder in self.encoders[1:]:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for decoder, skip in zip(self.decoders[:-1], reversed(skips)):
            x = decoder(x, skip)
        return x

    def last_level(self, x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """The full-resolution decoder and the head: the correction."""
        return self.head(self.decoders[-1](x, first))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
