"""Figures like the paper's: image panels with a zoomed region (Figure 4), HU density curves per
region (Figure 5) and the ablation's error maps (Figure 6). One window for every image of a figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE
from LDCTDenoiseLib.compare.report import plot_densities, slug

from .analysis import CaseResult

ERROR_RANGE_HU = 100.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_panel(result: CaseResult, path: Path) -> None:
    """Every image of one slice in the soft-tissue window, and below each the same zoomed region."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    panel = result.panel
    names = list(panel.images)
    rows, columns = panel.zoom
    figure, axes = plt.subplots(2, len(names), figsize=(2.3 * len(names), 4.9), dpi=110)
    for column, name in enumerate(names):
        image = panel.images[name]
        for row, view in enumerate((image, image[rows, columns])):
            axis = axes[row, column]
            axis.imshow(view, cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_title(name, fontsize=8)
        axes[0, column].add_patch(Rectangle((columns.start, rows.start), columns.stop - columns.start,
                                            rows.stop - rows.start, fill=False, color="gold", linewidth=0.8))
    figure.suptitle(f"{result.case.name}, slice {panel.slice_index}, {result.dose:.0%} dose; "
                    f"{SOFT_TISSUE.label}; zoom: {panel.zoom_region}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def ablation_panel(result: CaseResult, methods: list[str], path: Path) -> None:
    """The ablation's outputs (zoomed) and their absolute error against the NDCT, one scale for all."""
    plt = _pyplot()
    panel = result.panel
    names = [n for n in ["LDCT", *methods] if n in panel.images]
    rows, columns = panel.zoom
    reference = panel.images["NDCT"][rows, columns]
    figure, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 5.0), dpi=110, squeeze=False,
                                layout="constrained")
    for column, name in enumerate(names):
        view = panel.images[name][rows, columns]
        axes[0, column].imshow(view, cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high)
        error = axes[1, column].imshow(np.abs(view - reference), cmap="magma", vmin=0, vmax=ERROR_RANGE_HU)
        axes[0, column].set_title(name, fontsize=8)
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(error, ax=axes[1, :].tolist(), shrink=0.8, label="|image - NDCT| (HU)")
    figure.suptitle(f"Ablation, {result.case.name}, slice {panel.slice_index}, {result.dose:.0%} dose "
                    f"({panel.zoom_region}); top {SOFT_TISSUE.label}", fontsize=9)
    figure.savefig(path)
    plt.close(figure)


def density_figures(result: CaseResult, folder: Path, stem: str) -> list[tuple[str, Path]]:
    """One HU density figure per study region (NDCT dashed); returns (region, path) pairs."""
    out = []
    for region in result.report.regions:
        if region.region.name == "body":
            continue
        path = folder / f"{stem}-density-{slug(region.region.name)}.png"
        plot_densities(region.densities, f"{region.region.name}, {result.dose:.0%} dose", path)
        out.append((region.region.name, path))
    return out
