"""PSNR, SSIM and RMSE of several volumes against a reference (the NDCT) inside a region.

Per slice that the region touches: PSNR and RMSE over the region's voxels of that slice; SSIM as
the mean of the Wang et al. SSIM map over those voxels (the map is computed on the whole slice,
so the window sees the region's surroundings as scikit-image's does; voxels within 5 pixels of the
slice border are left out, as scikit-image leaves them out of its mean). Each figure is computed
per window (both images clipped to it; its width is the data range). Slices are the samples of the
paired t-tests between methods, as in the paper's tables.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy import stats

from ..errors import InputError
from .metrics import DEFAULT_WINDOWS, SSIM_RADIUS, Window, slice_metrics

METRICS = ("psnr", "ssim", "rmse_hu", "nrmse")


def compare_in_region(volumes: dict[str, np.ndarray], reference: np.ndarray, mask: np.ndarray,
                      windows: tuple[Window, ...] = DEFAULT_WINDOWS) -> dict:
    """Per-slice rows, per-method means and pairwise paired t-tests, for every window."""
    _check(volumes, reference, mask)
    slices = [k for k in range(mask.shape[0]) if _usable(mask[k])]
    if not slices:
        raise InputError("the region has no slice with voxels farther than 5 pixels from the slice border")
    rows = []
    for k in slices:
        for window in windows:
            for name, volume in volumes.items():
                rows.append({"slice": k, "window": window.label, "data_range": window.data_range, "method": name,
                             "voxels": int(mask[k].sum()),
                             **slice_metrics(volume[k], reference[k], window, mask[k])})
    return {"slices": rows, "means": means_by_method(rows), "t_tests": paired_t_tests(rows)}


def means_by_method(rows: list[dict]) -> list[dict]:
    """Mean and std of each metric per window and method, over the rows (slices)."""
    out = []
    for window in dict.fromkeys(r["window"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            items = [r for r in rows if r["window"] == window and r["method"] == method]
            entry = {"window": window, "data_range": items[0]["data_range"], "method": method, "slices": len(items)}
            for metric in METRICS:
                values = np.array([r[metric] for r in items])
                entry[metric] = float(values.mean())
                entry[f"{metric}_std"] = float(values.std())
            out.append(entry)
    return out


def paired_t_tests(rows: list[dict]) -> list[dict]:
    """Paired t-tests across slices for every pair of methods (NaN with a single slice)."""
    out = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for window in dict.fromkeys(r["window"] for r in rows):
        for a, b in combinations(methods, 2):
            entry = {"window": window, "a": a, "b": b}
            for metric in METRICS:
                first = np.array([r[metric] for r in rows if r["window"] == window and r["method"] == a])
                second = np.array([r[metric] for r in rows if r["window"] == window and r["method"] == b])
                finite = np.isfinite(first) & np.isfinite(second)
                p = float("nan")
                if finite.sum() > 1 and np.any(first[finite] != second[finite]):
                    p = float(stats.ttest_rel(first[finite], second[finite]).pvalue)
                entry[f"{metric}_p"] = p
            out.append(entry)
    return out


def _usable(mask_slice: np.ndarray) -> bool:
    r = SSIM_RADIUS
    return bool(mask_slice[r:-r, r:-r].any())


def _check(volumes: dict[str, np.ndarray], reference: np.ndarray, mask: np.ndarray) -> None:
    if not volumes:
        raise InputError("no volumes to compare")
    for name, volume in volumes.items():
        if volume.shape != reference.shape:
            raise InputError(f"{name} has shape {volume.shape} but the reference {reference.shape}; "
                             "put the reference on the volume's grid first (resample/register)")
        if not np.isfinite(volume).all():
            raise InputError(f"{name} holds NaN or infinite values")
    if mask.shape != reference.shape or mask.dtype != bool:
        raise InputError(f"the region mask must be boolean with shape {reference.shape}")
    if not np.isfinite(reference).all():
        raise InputError("the reference holds NaN or infinite values")
    if not mask.any():
        raise InputError("the region is empty")
