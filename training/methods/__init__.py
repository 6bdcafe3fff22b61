"""The methods of the field, one folder each: its losses, its training step, its critic and its presets.

Its network is in ``LDCTDenoiseLib.networks`` (what inference needs). Every method trains with the
same trainer (``training.trainer``), which finds a stage's step here (``training_step``), on the same
data and noise, and is scored by the same evaluation; its presets are found by name
(``ldct-train train --config wgan-vgg``). A method is a recipe, so the registry also records what the
exported manifest says about a model's origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from LDCTDenoiseLib.errors import InputError

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Method:
    name: str
    folder: str  # the package beside this file
    architecture: str  # LDCTDenoiseLib.networks entry
    reference: str
    summary: str

    @property
    def presets(self) -> list[str]:
        return sorted(p.stem for p in (HERE / self.folder / "presets").glob("*.yaml"))


METHODS = {
    method.name: method
    for method in (
        Method("hu2024", "hu2024", "attention-residual-unet",
               "Hu et al., Quant Imaging Med Surg 2024;14(1):335-351, doi 10.21037/qims-23-403",
               "two-stage attention residual U-Net: stage 1 supervised, stage 2 WGAN-GP on unaligned pairs"),
        Method("wgan-vgg", "wgan_vgg", "wgan-vgg-cnn",
               "Yang et al., IEEE Trans Med Imaging 2018;37(6):1348-1357, doi 10.1109/TMI.2018.2827462",
               "8-layer CNN trained as a WGAN-GP with a VGG-19 perceptual loss (and its MSE/VGG ablations)"),
        Method("zhang-unet", "zhang_unet", "unet",
               "Zhang et al., Quant Imaging Med Surg 2023 (transfer learning for LDCT denoising)",
               "24-layer U-Net trained with MSE; the method behind ldct-train finetune"),
        Method("structkpn", "structkpn", "structkpn",
               "Xu et al., IEEE ICIP 2021:1639-1643, doi 10.1109/ICIP42928.2021.9506679",
               "kernel prediction network with a structure-aware loss (per-pixel L2 / SSIM / L1)"),
        Method("pix2pix", "pix2pix", "pix2pix-unet",
               "Isola et al., IEEE CVPR 2017:1125-1134, doi 10.1109/CVPR.2017.632",
               "U-Net generator trained as a conditional GAN (PatchGAN) with L1 on aligned pairs"),
        Method("cyclegan", "cyclegan", "cyclegan-resnet",
               "Zhu et al., IEEE ICCV 2017:2223-2232, doi 10.1109/ICCV.2017.244",
               "ResNet generators trained with cycle consistency and least-squares GANs on unpaired LDCT/NDCT"),
    )
}


def training_step(stage: str):
    """The ``TrainingStep`` of ``stage``, from the method folder that owns it (``<folder>/step.py``'s STEPS)."""
    from .cyclegan.step import STEPS as CYCLEGAN
    from .hu2024.step import STEPS as HU2024
    from .pix2pix.step import STEPS as PIX2PIX
    from .wgan_vgg.step import STEPS as WGAN_VGG

    steps = {**HU2024, **WGAN_VGG, **PIX2PIX, **CYCLEGAN}
    try:
        return steps[stage]
    except KeyError:
        raise InputError(f"no method trains stage {stage!r}; known stages: {', '.join(steps)}") from None


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
