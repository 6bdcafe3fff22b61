"""The mirrored and transposed views of a slice stack whose corrections the engine can average.

A geometric self-ensemble: the network was trained on flipped and rotated crops, so its correction of
each view, mapped back, is as good a guess as the original's, and their errors partly cancel. The
first view is the slice itself; 2 adds its left-right mirror (anatomy is nearly symmetric about the
sagittal plane), 4 every mirror, 8 the transposed ones too (how many: ``EngineOptions.self_ensemble``).
"""

from __future__ import annotations

import numpy as np

# (transpose rows and columns?, then flip these axes) of a (slices, rows, columns) stack
DIHEDRAL_VIEWS = ((False, ()), (False, (2,)), (False, (1,)), (False, (1, 2)),
                  (True, ()), (True, (2,)), (True, (1,)), (True, (1, 2)))


def view(stack: np.ndarray, transpose: bool, flips: tuple[int, ...]) -> np.ndarray:
    """``stack`` as the network sees it in this view (a contiguous array)."""
    stack = stack.transpose(0, 2, 1) if transpose else stack
    return np.ascontiguousarray(np.flip(stack, flips) if flips else stack)


def unview(stack: np.ndarray, transpose: bool, flips: tuple[int, ...]) -> np.ndarray:
    """A view's result mapped back onto the original's pixels (``view``'s inverse)."""
    stack = np.flip(stack, flips) if flips else stack
    return stack.transpose(0, 2, 1) if transpose else stack
