"""What every denoising network of the registry shares: a validated config, and any H x W in.

The engine, the ONNX export and the trainer call only ``forward`` (input + correction, any size),
``residual`` (the correction for a size that is a multiple of ``size_multiple``), ``size_multiple``
and ``config``; a new method's network subclasses :class:`DenoisingNetwork` and implements
``residual``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

ConfigT = TypeVar("ConfigT")


class NetworkConfig:
    """Base of the architectures' frozen config dataclasses: dict round trip with validation."""

    label = "network"  # what the messages call this config ("unknown generator settings ...")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict) -> ConfigT:
        return config_from_dict(cls, values)

    in_channels: int

    def problems(self) -> list[str]:
        """What is out of range (empty when the config is valid); subclasses add their own ranges."""
        if self.in_channels != 1:
            return [f"in_channels must be 1 (one CT slice); got {self.in_channels}"]
        return []


def config_from_dict(cls: type[ConfigT], values: Any) -> ConfigT:
    """A frozen config dataclass from a manifest's mapping; every problem is named in one ValueError.

    Field types are checked against the defaults (int, float, bool), then ``config.problems()``
    (ranges) when the class has it.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    label = getattr(cls, "label", cls.__name__)
    if not isinstance(values, dict):
        raise ValueError(f"a {label} config is a mapping of {', '.join(names)}; got {type(values).__name__}")
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {label} settings {sorted(unknown)} (known: {', '.join(names)})")
    config = cls(**values)
    problems = []
    for field in dataclasses.fields(cls):
        value, default = getattr(config, field.name), field.default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(f"{field.name} must be true or false; got {value!r}")
        elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{field.name} must be a whole number; got {value!r}")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problems.append(f"{field.name} must be a number; got {value!r}")
    if not problems and isinstance(config, NetworkConfig):
        problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return config


def train_with_frozen_batch_norm(network: nn.Module) -> None:
    """Train mode, but every batch norm in eval mode: fine-tuning on small crops keeps the statistics the
    network was trained with (its scales and shifts still learn)."""
    network.train()
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class DenoisingNetwork(nn.Module):
    """Maps a normalised LDCT slice batch (N, 1, H, W) to a normalised NDCT estimate of the same size.

    Inputs whose size is not a multiple of ``size_multiple`` are padded (replicate) and the correction
    cropped back, so the result always adds to the original pixels.
    """

    config: Any

    @property
    def size_multiple(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        return x + self.residual(padded)[..., :height, :width].to(x.dtype)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _as_correction(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` as the correction: itself where the network learns one (``config.residual``), else out - x."""
        return out if self.config.residual else out - x


class ImageOrCorrectionNetwork(DenoisingNetwork):
    """A ``body`` whose output is the image through a tanh, as the image-translation papers have it, or,
    with ``config.residual``, the correction itself, its last layer zero-initialised.

    Zero-initialised, training starts from the identity: a randomly initialised last layer adds a
    correction of hundreds of HU at step 0 (measured on Pix2Pix's U-Net: L1 0.40, 1600 HU), which
    short budgets spend their steps undoing.
    """

    body: nn.Module

    def _set_output(self, last: nn.Module) -> None:
        """Call once ``body`` is built, with its last layer."""
        if self.config.residual:
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
        self.output = nn.Identity() if self.config.residual else nn.Tanh()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self._as_correction(self.output(self.body(x)), x)
