"""How much noise the keep-noise rule should keep on each kernel kind, on slices the sweep does not score.

``python -m evaluation.kernel_calibration [--data ../shared/data] [--out docs/evaluation/kernel-calibration]``

The calibration slices are other slices of the sweep's held-out series of each kind (sharp: Philips L
shoulders, chest and liver, whose normal-dose flat noise runs from 36 to 82 HU along the series, and
GE LUNG; smooth: Siemens B10f; standard: Philips B of the same acquisition as the L slices). Each
gets the sweep's cells (both filters and streak levels) at 10-150 HU added, the bundled model's
whole correction once per cell (cached with the sweep's outputs), then the keep-noise rule at every
keep in ``KEEPS``. Per kind and keep, the report counts the cells not worse than the input in both
windows (by more than ``TOLERANCE_DB``) and the mean gains; the kind's keep is the one not worse in
the most cells, the largest mean soft-tissue gain among those, and ``engine.kernel.KEEP_FACTOR`` is
that keep over the model's (the standard kind's keep is the model's own, chosen on validation data).
Writes ``README.md`` and ``cells.csv``; no absolute path of this machine.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE, psnr
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser, model_keep_noise_hu
from LDCTDenoiseLib.engine.kernel import KEEP_FACTOR, kind_of_kernel_name
from LDCTDenoiseLib.engine.noise_level import adapted_correction
from LDCTDenoiseLib.models.weights import load_model

from .config import REPOSITORY
from .report import _commit
from .sweep import (
    CACHE_VERSION,
    OutputCache,
    SweepSlice,
    _low_dose,
    _model_output,
    load_sweep,
    read_slice,
)

MODEL = REPOSITORY / "Resources" / "Models" / "default"
SLICES = (("ct/lung-pet-ct-dx/Lung_Dx-A0001/kernel-L", (3, 20, 40)), ("ct/cptac-pda/C3L-00189", (8, 16)),
          ("ct/acrin-flt-breast/ACRIN-FLT-Breast_013", (20, 35)), ("ct/lung-pet-ct-dx/Lung_Dx-A0001/kernel-B", (20,)))
NOISE_HU = (10, 20, 40, 80, 150)
KEEPS = (10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100)
TOLERANCE_DB = 0.1


def calibration_cells(data: Path, say=print) -> list[dict]:
    """One row per slice, cell and keep: gains over the input in both windows."""
    sweep, cache = load_sweep(), OutputCache()
    model = load_model(MODEL)
    whole = VolumeDenoiser(model, EngineOptions(device="cpu", precision="fp32", keep_noise_hu=0.0))
    rows = []
    for series, indices in SLICES:
        for index in indices:
            pair = read_slice(data, SweepSlice(f"{Path(series).name} {index}", series, index, ""))
            kind = kind_of_kernel_name(pair.kernel)
            for filter_label, streak, noise_hu in [(f, s, n) for f in sweep.filters for s in sweep.streaks
                                                   for n in NOISE_HU]:
                settings = sweep.settings(filter_label, streak, noise_hu)
                ldct = _low_dose(cache, sweep, pair, settings)
                key = {"slice": [series, index], **settings.to_dict(), "seed": sweep.seed, "version": CACHE_VERSION}
                correction = _model_output(cache, key, "whole", whole, ldct, None) - ldct
                before = _psnr(ldct, pair.ndct)
                for keep in KEEPS:
                    shaped, weight, _ = adapted_correction(ldct, correction, keep)
                    after = _psnr(ldct + shaped * np.float32(weight), pair.ndct)
                    rows.append({"slice": pair.spec.name, "kernel": pair.kernel, "kind": kind,
                                 "ndct_noise_hu": round(pair.ndct_flat_noise, 1), "filter": filter_label,
                                 "streak": streak, "noise_hu": noise_hu, "keep_hu": keep, "weight": round(weight, 3),
                                 "gain_soft": after["psnr_soft"] - before["psnr_soft"],
                                 "gain_full": after["psnr_full"] - before["psnr_full"]})
            say(f"{pair.spec.name} ({pair.kernel}, {kind}) done")
    return rows


def _psnr(image: np.ndarray, ndct: np.ndarray) -> dict[str, float]:
    return {"psnr_soft": psnr(image, ndct, SOFT_TISSUE), "psnr_full": psnr(image, ndct, FULL_RANGE)}


def summary(rows: list[dict]) -> dict[str, list[dict]]:
    """Per kind, per keep: cells not worse in both windows, and the mean gains."""
    table: dict[str, list[dict]] = {}
    for kind in sorted({row["kind"] for row in rows}):
        for keep in KEEPS:
            cells = [row for row in rows if row["kind"] == kind and row["keep_hu"] == keep]
            not_worse = sum(min(row["gain_soft"], row["gain_full"]) >= -TOLERANCE_DB for row in cells)
            table.setdefault(kind, []).append({
                "keep_hu": keep, "not_worse": not_worse, "cells": len(cells),
                "mean_gain_soft": float(np.mean([row["gain_soft"] for row in cells])),
                "mean_gain_full": float(np.mean([row["gain_full"] for row in cells])),
                "worst_db": float(min(min(row["gain_soft"], row["gain_full"]) for row in cells))})
    return table


def chosen_keep(lines: list[dict]) -> dict:
    """The keep not worse in the most cells; among those, the largest mean soft-tissue gain."""
    return max(lines, key=lambda line: (line["not_worse"], line["mean_gain_soft"]))


def write(rows: list[dict], out: Path, model_keep: float) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "cells.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summary(rows)
    lines = ["# Keep-noise per kernel kind: calibration", "",
             f"Made by `python -m evaluation.kernel_calibration` at commit {_commit()}, bundled model (keeps "
             f"{model_keep:g} HU on a standard kernel). Slices (none scored by the sweep): "
             + "; ".join(f"{Path(series).name} {', '.join(map(str, idx))}" for series, idx in SLICES)
             + f". Cells: both sweep filters and streak levels at {', '.join(map(str, NOISE_HU))} HU added. "
             f"Not worse: neither window more than {TOLERANCE_DB} dB below the input. Per cell: `cells.csv`.", ""]
    for kind, kind_lines in table.items():
        chosen = chosen_keep(kind_lines)
        noise = sorted({row["ndct_noise_hu"] for row in rows if row["kind"] == kind})
        lines += [f"## {kind} (normal-dose flat noise {', '.join(f'{n:g}' for n in noise)} HU)", "",
                  "| keep HU | not worse | mean gain soft dB | mean gain full dB | worst dB |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {line['keep_hu']} | {line['not_worse']}/{line['cells']} | {line['mean_gain_soft']:+.2f} | "
                  f"{line['mean_gain_full']:+.2f} | {line['worst_db']:+.2f} |" for line in kind_lines]
        engine = model_keep * KEEP_FACTOR[kind]
        lines += ["", f"Not worse in the most cells ({chosen['not_worse']}/{chosen['cells']}), then the largest "
                  f"mean gain: **{chosen['keep_hu']} HU**; the engine keeps {engine:g} HU "
                  f"({KEEP_FACTOR[kind]:g} x {model_keep:g})."
                  + (" The standard kind keeps the model's own, chosen on its validation data over many standard "
                     "series; this low-noise slice is shown for comparison, not to set it." if kind == "standard"
                     else ""), ""]
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "evaluation" / "kernel-calibration")
    args = parser.parse_args()
    rows = calibration_cells(args.data)
    print(write(rows, args.out, model_keep_noise_hu(load_model(MODEL))))


if __name__ == "__main__":
    main()
