"""StructKPN's structure-aware loss: per-pixel weights of L2, SSIM and L1 from the target's structure.

The structure tensor of the NDCT, averaged over 11x11 patches, gives at every pixel a gradient
strength ``s = sqrt(l1 + l2)`` (its eigenvalues) and a coherence ``c = (l1 - l2) / (l1 + l2)``.
Flat regions (weak gradients) are weighted towards L2, which removes noise hardest; strong coherent
edges towards L1, which keeps them sharp; strong incoherent texture towards SSIM:

    w_L2 = exp(-(s / s_ref)^2 / (2 sigma_L2^2)),  w_L1 = (1 - w_L2) (1 - exp(-c^2 / (2 sigma_L1^2))),
    w_SSIM = 1 - w_L2 - w_L1,   sigma_L2 = 1.8, sigma_L1 = 0.35.

``s_ref`` is the (lower) median strength over the body (target above -700 HU), so the strength is relative
to the image's own texture and noise whatever its HU scale. The paper's exact normalisation is not
available here; this is our reading, stated so it can be changed. The L2 term is ``e^2 / (2 delta)``
with delta = 20 HU, so its gradient equals L1's at a 20 HU error (in normalised units plain L2 would
be a thousand times weaker than L1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from LDCTDenoiseLib.compare.metrics import SSIM_RADIUS

from ...ssim import ssim_map

PATCH = 11
SIGMA_L2 = 1.8
SIGMA_L1 = 0.35
BODY_THRESHOLD = (-700.0 + 1024.0) / 4096.0  # -700 HU in the default normalisation
DELTA = 20.0 / 4096.0  # 20 HU in normalised units
EPS = 1e-12


def structure_weights(target: Tensor, patch: int = PATCH, sigma_l2: float = SIGMA_L2,
                      sigma_l1: float = SIGMA_L1) -> tuple[Tensor, Tensor, Tensor]:
    """(w_L2, w_SSIM, w_L1) of a (N, 1, H, W) target; the three sum to one at every pixel."""
    target = target.detach().to(torch.promote_types(target.dtype, torch.float32))
    padded = F.pad(target, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    tensor = torch.cat([gx * gx, gy * gy, gx * gy], dim=1)
    radius = patch // 2
    jxx, jyy, jxy = F.avg_pool2d(F.pad(tensor, (radius,) * 4, mode="replicate"), patch, stride=1).unbind(1)
    trace = jxx + jyy
    spread = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)
    strength = torch.sqrt(trace.clamp_min(0))
    coherence = spread / (trace + EPS)
    reference = torch.stack([_body_median(s, t) for s, t in zip(strength, target[:, 0], strict=True)]).view(-1, 1, 1)
    w_l2 = torch.exp(-((strength / (reference + EPS)) ** 2) / (2 * sigma_l2**2))
    w_l1 = (1 - w_l2) * (1 - torch.exp(-(coherence**2) / (2 * sigma_l1**2)))
    return w_l2[:, None], (1 - w_l2 - w_l1)[:, None], w_l1[:, None]


def structure_aware_loss(output: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """``mean(w_L2 e^2 / 2 delta) + mean(w_L1 |e|) + mean(w_SSIM (1 - SSIM))`` (SSIM on its valid part)."""
    w_l2, w_ssim, w_l1 = structure_weights(target)
    error = output.float() - target.float()
    with torch.autocast(output.device.type, enabled=False):
        local = 1.0 - ssim_map(output.float(), target.float(), data_range)
    r = SSIM_RADIUS
    ssim_weight = w_ssim[..., r:-r, r:-r]  # the SSIM map covers the valid part only
    return (w_l2 * error**2 / (2 * DELTA)).mean() + (w_l1 * error.abs()).mean() + (ssim_weight * local).mean()


def _body_median(strength: Tensor, target: Tensor) -> Tensor:
    body = strength[target > BODY_THRESHOLD]
    return (body if body.numel() else strength.flatten()).median()
