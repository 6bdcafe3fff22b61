"""The robustness sweep's report: tables of the gain over the input, the issue's acceptance checks
per model, the gain across the grid as a figure and the streak images of one cell."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.atomic import atomic_folder
from LDCTDenoiseLib.compare.metrics import SOFT_TISSUE
from LDCTDenoiseLib.compare.report import slug, write_csv

from .figures import _pyplot
from .report import _commit, _finite, _machine
from .sweep import LOW_FREQUENCY_SIGMA_PX

BASELINES = ("LDCT", "Gaussian", "BM3D")
METRICS = ("psnr_soft", "psnr_full", "ssim_soft", "ssim_full")
BIAS_LIMIT_HU = 3.0
BM3D_SHARE = 44 / 48  # of the cells with >= 20 HU added, where the model must be ahead of BM3D
LOW_FREQUENCY_SHARE = 0.6  # of the input's low-frequency error, on the strong-streak cells
GAIN_PANELS_PER_ROW = 4  # methods a row in the gain figure


def write_sweep_report(result: dict, out: Path, seconds: float, quick: bool = False,
                       only_models: list[str] | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out, replace=True) as tmp:
        (tmp / "figures").mkdir()
        figures = [gain_figure(result, tmp / "figures" / "gain.png"),
                   *[streak_figure(result, name, tmp / "figures" / f"streaks-{slug(name)}.png")
                     for name in result["figure_images"]]]
        (tmp / "README.md").write_text(markdown(result, [f.relative_to(tmp) for f in figures], seconds, quick,
                                                only_models))
        write_csv(tmp / "sweep.csv", result["rows"])
        kept = {k: v for k, v in result.items() if k not in ("rows", "figure_images")}
        (tmp / "sweep.json").write_text(json.dumps(_finite({**kept, "checks": checks(result)}), indent=1,
                                                   allow_nan=False))
    return out / "README.md"


def methods_of(result: dict) -> list[str]:
    return list(dict.fromkeys(row["method"] for row in result["rows"]))


def models_of(result: dict) -> list[str]:
    return [m for m in methods_of(result) if m not in BASELINES]


def cell_means(result: dict) -> dict[tuple, dict]:
    """Per (method, filter, streaks, noise): the mean of each figure over the slices."""
    groups: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        groups.setdefault((row["method"], row["filter"], row["streak"], row["noise_hu"]), []).append(row)
    return {key: {m: float(np.mean([r[m] for r in rows])) for m in (*METRICS, "flat_noise_hu", "bias_hu")}
            for key, rows in groups.items()}


def gain_over_input(means: dict, method: str, cell: tuple, metric: str) -> float:
    """The method's mean figure minus the input's in one cell; NaN where the method did not run there."""
    if (method, *cell) not in means:
        return float("nan")
    return means[(method, *cell)][metric] - means[("LDCT", *cell)][metric]


NOT_WORSE = "not worse than the input (>= 10 HU added, both windows)"
AHEAD_GAUSSIAN = "ahead of Gaussian (>= 20 HU, both windows)"
AHEAD_BM3D = f"ahead of BM3D (>= 20 HU, both windows; {BM3D_SHARE:.0%} of cells needed)"
NOISE_AT_NDCT = "flat noise <= NDCT's (40-80 HU added)"
NOISE_ABOVE = "flat noise <= 1.5 x NDCT's (> 80 HU added)"
NOISE_BELOW = "flat noise <= input's (< 40 HU added)"
BIAS = "abs(mean HU bias) <= 3 HU, or <= the input's"
LOW_FREQUENCY = f"low-frequency error <= {LOW_FREQUENCY_SHARE:g} x input's (strong streaks)"


def checks(result: dict) -> dict[str, dict]:
    """Issue 31's restated checks per model, on every (slice, cell): how many pass of how many.

    Restated because two of the earlier ones contradicted each other: below 40 HU added the NDCT's
    own noise is a large share of the input's, so the model is held to its input there; and where
    photon starvation biases the simulated input itself, the model is held to that bias.
    """
    by_key = {(r["method"], r["slice"], r["filter"], r["streak"], r["noise_hu"]): r for r in result["rows"]}
    ndct_noise = result["ndct_flat_noise_hu"]
    outcome = {}
    for model in models_of(result):
        tallies: dict[str, list[bool]] = {name: [] for name in (
            NOT_WORSE, AHEAD_GAUSSIAN, AHEAD_BM3D, NOISE_AT_NDCT, NOISE_ABOVE, NOISE_BELOW, BIAS, LOW_FREQUENCY)}
        for (method, name, filt, streak, noise), row in by_key.items():
            if method != model:
                continue
            other = {m: by_key.get((m, name, filt, streak, noise)) for m in BASELINES}
            ldct = other["LDCT"]
            if noise >= 10:
                tallies[NOT_WORSE].append(row["psnr_soft"] >= ldct["psnr_soft"]
                                          and row["psnr_full"] >= ldct["psnr_full"])
            if noise < 40:
                tallies[NOISE_BELOW].append(row["flat_noise_hu"] <= ldct["flat_noise_hu"])
            elif noise <= 80:
                tallies[NOISE_AT_NDCT].append(row["flat_noise_hu"] <= ndct_noise[name])
            else:
                tallies[NOISE_ABOVE].append(row["flat_noise_hu"] <= 1.5 * ndct_noise[name])
            for baseline, label in (("Gaussian", AHEAD_GAUSSIAN), ("BM3D", AHEAD_BM3D)):
                if noise >= 20 and other[baseline] is not None:
                    tallies[label].append(row["psnr_soft"] > other[baseline]["psnr_soft"]
                                          and row["psnr_full"] > other[baseline]["psnr_full"])
            tallies[BIAS].append(abs(row["bias_hu"]) <= max(BIAS_LIMIT_HU, abs(ldct["bias_hu"])))
            if streak == "strong" and "low_frequency_error_hu" in row:
                tallies[LOW_FREQUENCY].append(
                    row["low_frequency_error_hu"] <= LOW_FREQUENCY_SHARE * ldct["low_frequency_error_hu"])
        outcome[model] = {name: {"pass": int(sum(v)), "of": len(v), "needed": _needed(name, len(v))}
                          for name, v in tallies.items() if v}
    return outcome


def _needed(check: str, cells: int) -> int:
    return int(np.ceil(BM3D_SHARE * cells)) if check == AHEAD_BM3D else cells


def markdown(result: dict, figures: list[Path], seconds: float, quick: bool,
             only_models: list[str] | None = None) -> str:
    """The report; ``only_models``: the study's models this run was limited to (``--models``)."""
    means = cell_means(result)
    methods = methods_of(result)
    noise_levels = sorted({k[3] for k in means})
    columns = sorted({(k[1], k[2]) for k in means})
    lines = [
        "# Robustness sweep: held-out subjects x reconstruction filter x added noise x streaks",
        "",
        f"Generated by `{_command(quick, only_models)}` "
        f"({'QUICK MODE: one slice, one cell; a check that the report builds, not a result' if quick else 'full'}"
        f"{'; only these models of the study' if only_models else ''}) "
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, commit `{_commit()}`, in {seconds / 60:.1f} min "
        f"({result['outputs']['made']} outputs made, {result['outputs']['reused']} taken from earlier runs' cache). "
        f"Machine: {_machine()}.",
        "",
        "Low-dose scans: scanner-realistic projection-domain noise (`LDCTDenoiseLib.simulation.scanner`) added to "
        "real normal-dose slices of subjects in no model's training or validation split; the noise std at the body "
        "centre is the row label. Metrics on whole slices (couch and field-of-view edge included) against the NDCT: "
        f"PSNR and SSIM in the soft-tissue window ({SOFT_TISSUE.label}, data range 400) and the full range "
        "(-1024..3072 HU, data range 4096); noise = root mean 9x9 local variance in flat soft tissue found on the "
        "NDCT; bias = mean HU difference from the NDCT there; low-frequency error = RMS in the body of the difference "
        f"from the NDCT smoothed with a {LOW_FREQUENCY_SIGMA_PX:g}-pixel Gaussian (streaks and blotches). The NDCT "
        "carries noise of its own (below).",
        "",
        "| slice | what | ConvolutionKernel | NDCT flat noise (HU) |",
        "|---|---|---|---|",
        *[f"| {s['name']} | {s['what']} | {result.get('kernels', {}).get(s['name']) or 'not stated'} | "
          f"{result['ndct_flat_noise_hu'][s['name']]:.1f} |" for s in result["slices"]],
        "",
        "Models whose keep-noise is their own (not set in `study.yaml`) keep it scaled to the series' kernel, as "
        "the engine does by default (`LDCTDenoiseLib/engine/kernel.py`: x0.75 smooth, x1 standard, x5 sharp).",
        "",
        f"Cells: filters {', '.join(sorted({c[0] for c in columns}))}; "
        f"streaks {', '.join(sorted({c[1] for c in columns}))} (see `evaluation/study.yaml`, `sweep:`); Gaussian "
        "sigma tuned per cell on the tuning slice; BM3D "
        + (f"with its noise std estimated from each slice, on cells with >= {result['bm3d_from_hu']:g} HU added."
           if result["bm3d"] else "not run (absent or quick)."),
        "",
        "## Acceptance checks (every slice x cell)",
        "",
        "| model | check | pass | needed | met |",
        "|---|---|---|---|---|",
    ]
    for model, tallies in checks(result).items():
        lines += [f"| {model} | {name} | {t['pass']} / {t['of']} | {t['needed']} | "
                  f"{'yes' if t['pass'] >= t['needed'] else 'no'} |" for name, t in tallies.items()]
    lines += weight_range_lines(result["weight_range"])
    for metric, label in (("psnr_soft", "PSNR gain over the input, soft tissue (dB)"),
                          ("psnr_full", "PSNR gain over the input, full range (dB)")):
        lines += ["", f"## {label}, mean over slices", "",
                  "| method | added noise (HU) | " + " | ".join(f"{f} / {s}" for f, s in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for method in methods[1:]:
            for noise in noise_levels:
                gains = [gain_over_input(means, method, (f, s, noise), metric) for f, s in columns]
                if np.isfinite(gains).any():
                    lines.append(f"| {method} | {noise:g} | " + " | ".join(
                        f"{g:+.2f}" if np.isfinite(g) else "not run" for g in gains) + " |")
    lines += ["", "## Noise in flat soft tissue and mean-HU bias, mean over slices and cells of a noise level", "",
              "| method | " + " | ".join(f"{n:g} HU" for n in noise_levels) + " |",
              "|---|" + "---|" * len(noise_levels)]
    for method in methods:
        cells = [[means[(method, f, s, n)] for f, s in columns if (method, f, s, n) in means] for n in noise_levels]
        lines.append(f"| {method} | " + " | ".join(
            f"{np.mean([c['flat_noise_hu'] for c in cs]):.1f} ({np.mean([c['bias_hu'] for c in cs]):+.1f})"
            if cs else "not run" for cs in cells) + " |")
    lines += ["", "Each entry: noise std (HU) and, in brackets, bias (HU).", ""]
    lines += edge_lines(result, models_of(result), noise_levels)
    lines += ["", "## Figures", ""]
    lines += [f"![{f.stem}]({f.as_posix()})" for f in figures]
    lines += ["", "Every per-slice figure is in `sweep.csv`; settings, seeds and the checks in `sweep.json`.", ""]
    return "\n".join(lines)


def edge_lines(result: dict, models: list[str], noise_levels: list[float]) -> list[str]:
    """Per model and slice: the edge gradient at the NDCT's strongest edges over the input's, mean over cells."""
    rows = [row for row in result["rows"] if "edge_gradient" in row]
    if not rows:
        return []
    inputs = {(r["slice"], r["filter"], r["streak"], r["noise_hu"]): r["edge_gradient"] for r in rows
              if r["method"] == "LDCT"}
    lines = ["## Edge sharpness", "", "Mean gradient magnitude (1-px Gaussian first) on the NDCT's strongest 1 % of "
             "edges in the body (bone, lung, skin), over the input's, mean over the cells of a noise level: below 1 "
             "the output's edges are wider than the input's.", "",
             "| model | slice | " + " | ".join(f"{n:g} HU" for n in noise_levels) + " |",
             "|---|---|" + "---|" * len(noise_levels)]
    for model in models:
        for name in dict.fromkeys(r["slice"] for r in rows):
            ratios = [[r["edge_gradient"] / inputs[(name, r["filter"], r["streak"], n)] for r in rows
                       if r["method"] == model and r["slice"] == name and r["noise_hu"] == n] for n in noise_levels]
            lines.append(f"| {model} | {name} | " + " | ".join(
                f"{np.mean(cell):.3f}" if cell else "-" for cell in ratios) + " |")
    return lines


def weight_range_lines(scan: dict | None) -> list[str]:
    """The table of ``evaluation.weight_range``: per cell, the shares of the correction each check allows."""
    if not scan:
        return []
    cells = scan["cells"]
    share = lambda value: "none" if not np.isfinite(value) else f"{value:.2f}"  # noqa: E731
    answer = lambda flag: "-" if flag is None else ("yes" if flag else "no")  # noqa: E731
    with_bm3d = [c for c in cells if c["ahead_of_bm3d"] is not None]
    lines = ["", f"## Can the checks pass? Shares of the {scan['model']}'s correction", "",
             "The keep-noise rule outputs the input plus a share w (0..1) of the network's shaped correction, so "
             "every keep value (and any per-slice choice, an oracle's included) is one w. Scanned in steps of 0.02: "
             "the largest w not worse than the input in both windows, the smallest w with flat noise at or below "
             "the NDCT's, whether one w passes both, and whether one w is ahead of BM3D in both windows. "
             f"One w passes both noise checks in {sum(c['both'] for c in cells)} of {len(cells)} cells"
             + (f"; one w is ahead of BM3D in {sum(c['ahead_of_bm3d'] for c in with_bm3d)} of {len(with_bm3d)}."
                if with_bm3d else "."), "",
             "| slice | filter / streaks | added (HU) | input noise (HU) | NDCT noise (HU) | rule's w | "
             "largest w not worse | smallest w quiet | both | a w ahead of BM3D |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['slice']} | {c['filter']} / {c['streak']} | {c['noise_hu']:g} | {c['input_noise_hu']:.1f} | "
              f"{c['ndct_noise_hu']:.1f} | {c['applied']:.2f} | {share(c['max_not_worse'])} | "
              f"{share(c['min_quiet'])} | {answer(c['both'])} | {answer(c['ahead_of_bm3d'])} |"
              for c in sorted(cells, key=lambda c: (c["noise_hu"], c["input_noise_hu"]))]
    return lines


def gain_figure(result: dict, path: Path) -> Path:
    """Mean soft-tissue and full-range PSNR gain over the input across the grid: a pair of panels per
    method, ``GAIN_PANELS_PER_ROW`` methods a row (one row of a dozen methods is unreadable)."""
    plt = _pyplot()
    means = cell_means(result)
    methods = methods_of(result)[1:]
    noise_levels = sorted({k[3] for k in means})
    columns = sorted({(k[1], k[2]) for k in means})
    per_row = min(GAIN_PANELS_PER_ROW, len(methods))
    rows = -(-len(methods) // per_row)
    figure, axes = plt.subplots(rows, 2 * per_row, figsize=(2.4 * 2 * per_row + 1.5, 3.0 * rows), dpi=110,
                                squeeze=False, layout="constrained")
    for index, method in enumerate(methods):
        for half, metric in enumerate(("psnr_soft", "psnr_full")):
            grid = np.array([[gain_over_input(means, method, (f, s, n), metric) for f, s in columns]
                             for n in noise_levels])
            axis = axes[index // per_row, 2 * (index % per_row) + half]
            image = axis.imshow(grid, cmap="RdBu", vmin=-12, vmax=12, aspect="auto")
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    axis.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=6)
            axis.set_xticks(range(len(columns)), [f"{f}\n{s}" for f, s in columns], fontsize=6)
            axis.set_yticks(range(len(noise_levels)), [f"{n:g}" for n in noise_levels], fontsize=6)
            axis.set_title(f"{method}\n{'soft tissue' if metric == 'psnr_soft' else 'full range'}", fontsize=7)
            if index % per_row == 0 and half == 0:
                axis.set_ylabel("added noise (HU)", fontsize=7)
    for axis in axes.flat[2 * len(methods):]:
        axis.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.6, label="PSNR gain over LDCT (dB)")
    figure.savefig(path)
    plt.close(figure)
    return path


def streak_figure(result: dict, name: str, path: Path) -> Path:
    """One slice of the figure cell: every image (soft tissue) and its difference from the NDCT."""
    plt = _pyplot()
    images = result["figure_images"][name]
    names = list(images)
    figure, axes = plt.subplots(2, len(names), figsize=(2.3 * len(names), 4.9), dpi=110, squeeze=False)
    for column, method in enumerate(names):
        axes[0, column].imshow(images[method], cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high)
        axes[1, column].imshow(images[method] - images["NDCT"], cmap="gray", vmin=-150, vmax=150)
        axes[0, column].set_title(method, fontsize=8)
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    filt, streak, noise = result["figure_cell"]
    figure.suptitle(f"{name}: {filt} filter, {streak} streaks, {noise:g} HU added; top {SOFT_TISSUE.label}, "
                    "bottom minus NDCT (-150..150 HU)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _command(quick: bool, only_models: list[str] | None) -> str:
    if quick:
        return "python -m evaluation --quick"
    if only_models:
        return f"python -m evaluation --only sweep --models \"{','.join(only_models)}\""
    return "make report"
