"""The registry of denoising networks: a model manifest's ``architecture`` names one entry.

Each entry gives the network's config type, how to build it, and a memory figure for the engine's
batch sizing. The methods' training code (losses, presets) is in ``training.methods``; this package
holds only what inference needs, so the Slicer module can load every installed model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .cyclegan import CycleGanConfig, ResnetGenerator
from .hu2024 import Generator, GeneratorConfig
from .pix2pix import Pix2PixConfig, Pix2PixGenerator
from .structkpn import StructKPN, StructKpnConfig
from .unet import UNet, UNetConfig
from .wgan_vgg import WganVggConfig, WganVggGenerator


@dataclass(frozen=True)
class Architecture:
    name: str
    config_type: type
    network_type: type[nn.Module]
    summary: str
    bytes_per_pixel: Callable[[object], int]  # estimated peak fp32 activations of one slice, per pixel

    def config(self, values: dict):
        """The validated config of this architecture from a manifest's or preset's mapping."""
        return self.config_type.from_dict(values)

    def build(self, values: dict | object) -> nn.Module:
        config = values if isinstance(values, self.config_type) else self.config(values)
        return self.network_type(config)


ARCHITECTURES = {
    entry.name: entry
    for entry in (
        Architecture("attention-residual-unet", GeneratorConfig, Generator,
                     "attention residual U-Net of Hu et al. (QIMS 2024)", lambda c: 48 * c.base_width),
        Architecture("wgan-vgg-cnn", WganVggConfig, WganVggGenerator,
                     "8-layer CNN generator of WGAN-VGG (Yang et al., TMI 2018)", lambda c: 4 * 4 * c.width),
        Architecture("unet", UNetConfig, UNet, "U-Net of the transfer study (Zhang et al., QIMS 2023)",
                     lambda c: 4 * 12 * c.base_width),
        Architecture("structkpn", StructKpnConfig, StructKPN,
                     "kernel prediction network StructKPN (Xu et al., ICIP 2021)",
                     lambda c: 4 * (4 * c.width + 3 * c.kernel_size**2)),
        Architecture("cyclegan-resnet", CycleGanConfig, ResnetGenerator,
                     "ResNet generator of CycleGAN (Zhu et al., ICCV 2017)", lambda c: 4 * 4 * c.base_width),
        Architecture("pix2pix-unet", Pix2PixConfig, Pix2PixGenerator,
                     "U-Net generator of Pix2Pix (Isola et al., CVPR 2017)", lambda c: 4 * 2 * c.base_width),
    )
}
DEFAULT_ARCHITECTURE = "attention-residual-unet"


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``; an unknown name lists the known ones."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; this version runs {', '.join(ARCHITECTURES)}") from None


def architecture_of(network: nn.Module) -> Architecture:
    for entry in ARCHITECTURES.values():
        if type(network) is entry.network_type:
            return entry
    raise ValueError(f"{type(network).__name__} is not a registered denoising network")
