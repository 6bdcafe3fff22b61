"""VGG-19 feature extractor for the perceptual loss, defined here (no torchvision needed).

The layer list and parameter names follow torchvision's ``vgg19().features`` so the standard
ImageNet file ``vgg19-dcbb9e9d.pth`` loads as it is. Nothing is downloaded: the file is read
from the path given, ``$LDCTDENOISE_VGG19``, the torch hub cache or this project's cache folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from torch import nn

from LDCTDenoiseLib.errors import WeightsError
from LDCTDenoiseLib.models.weights import cache_dir

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG_ENV = "LDCTDENOISE_VGG19"
LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features``: 3x3 conv + ReLU blocks and 2x2 max pooling."""
    layers: list[nn.Module] = []
    channels = 3
    for item in LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class PerceptualFeatures(nn.Module):
    """Frozen VGG-19 features of a one-channel image in [0, 1] (grey -> RGB, ImageNet scaling)."""

    def __init__(self, features: nn.Sequential, layers: int) -> None:
        super().__init__()
        self.features = features[:layers].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> PerceptualFeatures:
        return self  # always in evaluation mode: a fixed feature space

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features((image.expand(-1, 3, -1, -1) - self.mean) / self.std)


def vgg_search_paths(explicit: str | Path | None = None) -> list[Path]:
    paths = [Path(explicit).expanduser()] if explicit else []
    if os.environ.get(VGG_ENV):
        paths.append(Path(os.environ[VGG_ENV]).expanduser())
    paths += [Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE, cache_dir() / VGG19_FILE]
    return paths


def load_perceptual(weights: str | Path | None, layers: int) -> PerceptualFeatures:
    """ImageNet VGG-19 features up to ``layers``; ``weights="random"`` is for tests only."""
    features = vgg19_features()
    if weights == "random":
        torch.manual_seed(0)
        return PerceptualFeatures(features, layers)
    searched = vgg_search_paths(weights)
    found = next((path for path in searched if path.is_file()), None)
    if found is None:
        raise WeightsError(
            "the perceptual loss needs ImageNet VGG-19 weights and none were found (looked at "
            + "; ".join(map(str, searched))
            + f"). Download {VGG19_URL} on a machine with internet and put it at "
            f"{searched[-1]} (or set loss.vgg_weights=PATH or ${VGG_ENV}); to train without the perceptual term "
            "set loss.perceptual=0 explicitly"
        )
    _check_hash_prefix(found)
    state = torch.load(found, map_location="cpu", weights_only=True)
    wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    missing, unexpected = features.load_state_dict(wanted, strict=False)
    if missing or unexpected or not wanted:
        raise WeightsError(
            f"{found} is not a torchvision VGG-19 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return PerceptualFeatures(features, layers)


def _check_hash_prefix(path: Path) -> None:
    """torchvision names its files ``name-<first 8 hex of sha256>.pth``: check that promise."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise WeightsError(
            f"{path} fails its checksum (sha256 {digest[:8]}..., name says {match.group(1)}); download it again"
        )
