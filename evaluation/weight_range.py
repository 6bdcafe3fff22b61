"""Which share of a model's correction passes both "not worse than the input" and "flat noise <= NDCT's".

The engine's keep-noise rule (``LDCTDenoiseLib.engine.noise_level``) gives each slice one share ``w`` (0 to 1)
of the network's shaped correction, so every keep value, and any rule of that form down to a
per-slice oracle, outputs ``ldct + w * correction``. Scanning ``w`` on each held-out cell shows
where the two acceptance checks can pass together at all, and where they exclude each other (the
NDCT carries noise of its own, which a denoiser cannot tell from the noise that was added), and
whether any share of the correction gets ahead of BM3D where the shipped rule does not.
"""

from __future__ import annotations

import numpy as np

from LDCTDenoiseLib.compare.metrics import DEFAULT_WINDOWS, psnr
from LDCTDenoiseLib.engine.noise_level import adapted_correction, local_noise_hu

WEIGHTS = np.linspace(0.0, 1.0, 51)


def passing_weights(ldct: np.ndarray, correction: np.ndarray, ndct: np.ndarray, flat: np.ndarray,
                    keep_noise_hu: float, bm3d: np.ndarray | None = None) -> dict[str, float | bool | None]:
    """The checks across ``WEIGHTS`` for one slice; ``correction`` is the network's whole one (keep-noise 0).

    ``flat`` is the NDCT's flat soft tissue (where the sweep measures noise). Returns the share the rule
    applies with ``keep_noise_hu``, the largest share not worse than the input in both windows, the
    smallest share with flat noise at or below the NDCT's (NaN where none), whether one share passes
    both, and whether one share is ahead of ``bm3d`` in both windows (None without it).
    """
    shaped, applied, _ = adapted_correction(ldct, correction, keep_noise_hu)
    ndct_noise = local_noise_hu(ndct, flat)
    images = [ldct + np.float32(weight) * shaped for weight in WEIGHTS]
    scores = np.array([[psnr(image, ndct, window) for window in DEFAULT_WINDOWS] for image in images])
    not_worse = (scores >= scores[0]).all(axis=1)  # weight 0 is the input
    quiet = np.array([local_noise_hu(image, flat) <= ndct_noise for image in images])
    ahead = None
    if bm3d is not None:
        ahead = bool((scores > [psnr(bm3d, ndct, window) for window in DEFAULT_WINDOWS]).all(axis=1).any())
    return {
        "input_noise_hu": local_noise_hu(ldct, flat),
        "ndct_noise_hu": ndct_noise,
        "applied": float(applied),
        "max_not_worse": float(WEIGHTS[not_worse].max()),
        "min_quiet": float(WEIGHTS[quiet].min()) if quiet.any() else float("nan"),
        "both": bool((not_worse & quiet).any()),
        "ahead_of_bm3d": ahead,
    }
