"""The 70x70 PatchGAN discriminator of Pix2Pix and CycleGAN, and CycleGAN's pool of earlier fakes.

PatchGAN (Isola et al., CVPR 2017): 4x4 convs, stride 2 three times then 1, widths 64, 128, 256, 512,
LeakyReLU 0.2, a norm after all but the first, one logit per 70x70 receptive field. Pix2Pix uses
batch norm and sees the input beside the image (two channels); CycleGAN instance norm (convs with
bias, as in the reference implementation) and the image alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}


class PatchGan(nn.Module):
    def __init__(self, in_channels: int = 1, width: int = 64, layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        Norm, bias = NORMS[norm], norm == "instance"
        widths = [width * min(2**n, 8) for n in range(layers + 1)]
        modules: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for n, (before, after) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            stride = 2 if n < layers - 1 else 1
            modules += [nn.Conv2d(before, after, 4, stride=stride, padding=1, bias=bias), Norm(after),
                        nn.LeakyReLU(0.2, True)]
        modules.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*modules)

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


class FakePool:
    """Up to ``size`` earlier fakes: each image of a batch is, with chance 1/2, swapped for a stored one.

    Shrivastava et al. (CVPR 2017), as CycleGAN uses it: the discriminator also sees what the
    generators made a while ago, which damps oscillation. ``size`` 0 passes batches through.
    """

    def __init__(self, size: int, rng: torch.Generator) -> None:
        self.size, self.rng, self.images = size, rng, []

    def __call__(self, batch: Tensor) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.rng) < 0.5:
                k = int(torch.randint(len(self.images), (), generator=self.rng))
                out.append(self.images[k])
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> list[Tensor]:
        return [image.cpu() for image in self.images]

    def load(self, images: list[Tensor], device: torch.device) -> None:
        self.images = [image.to(device) for image in images]
