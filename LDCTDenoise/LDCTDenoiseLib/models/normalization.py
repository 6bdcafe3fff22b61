"""The mapping between HU and what the network sees; it is stored with every set of weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PADDING_MARGIN_HU = 500.0  # further below the floor than noise in air reaches even at 150 HU: padding, kept as it is


@dataclass(frozen=True)
class Normalization:
    """Linear map of the clip range [hu_min, hu_max] onto [0, 1]."""

    hu_min: float = -1024.0
    hu_max: float = 3072.0

    def __post_init__(self) -> None:
        if not self.hu_max > self.hu_min:
            raise ValueError(f"hu_max ({self.hu_max}) must exceed hu_min ({self.hu_min})")

    @property
    def scale(self) -> float:
        return self.hu_max - self.hu_min

    def to_network(self, hu: np.ndarray) -> np.ndarray:
        """Clip to the range and scale to [0, 1] as float32 (a new array)."""
        clipped = np.clip(np.asarray(hu, dtype=np.float32), self.hu_min, self.hu_max)
        return (clipped - np.float32(self.hu_min)) / np.float32(self.scale)

    def floor_lift(self, hu: np.ndarray) -> np.ndarray:
        """HU that raise each pixel below ``hu_min`` to it; 0 for the rest and for padding far below.

        The network sees the input clipped at its floor and corrects that. Under the floor (-1024 HU:
        nothing is less dense than air) lies only noise in air, which adding the correction to the
        unclipped input would leave in; padding outside the reconstruction circle (-2048, -3024) stays.
        """
        hu = np.asarray(hu, dtype=np.float32)
        floor = np.float32(self.hu_min)
        under = (hu < floor) & (hu > floor - np.float32(PADDING_MARGIN_HU))
        return np.where(under, floor - hu, np.float32(0.0))

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32) * np.float32(self.scale) + np.float32(self.hu_min)

    def to_dict(self) -> dict:
        return {"kind": "linear-clip", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        values = dict(values)
        kind = values.pop("kind", "linear-clip")
        if kind != "linear-clip":
            raise ValueError(f"unsupported normalisation kind {kind!r}")
        return cls(**values)
