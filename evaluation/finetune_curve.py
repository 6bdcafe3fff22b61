"""How much of fine-tuning's gain a small share of the user's own data recovers (Zhang et al., QIMS 2023).

``python -m evaluation.finetune_curve [--model default] [--fractions 0.05 0.1 0.2 1.0]``.
The target is a scanner the model did not train for: thorax-141 (Philips, in the test split of
shared-ct-all.csv; the bundled model's ancestor, the first model, did see its anatomy under one fixed
parallel-beam recipe), its own pixel size (no rescaling), with a fixed noise recipe outside every
training range (a Hann filter at 0.4 of Nyquist, smoother than any trained on, 300 views, 60 HU added).
``ldct-train finetune`` runs once per fraction with the same budget; every run validates the starting
model first (step 0, the baseline) and then on the same held-out last 20 % of the series. The gain
recovered by a fraction is ``(best(f) - start) / (best(largest) - start)`` in soft-tissue PSNR
(the largest fraction: 1.0 by default).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from training.finetune import finetune

from .figures import _pyplot

REPOSITORY = Path(__file__).resolve().parents[1]
SERIES = "ct/thorax-141"
TARGET_SCAN = {"added_noise_hu": 60.0, "filter": "hann", "cutoff": 0.4, "views": 300, "detector_mm": 0.8,
               "electronic_std": 15.0, "bowtie": 1.5, "modulation": 0.5}
TRAIN_NOISE = {"added_noise_hu": [60.0, 60.0], "filters": ["hann"], "cutoff": [0.4, 0.4], "views": [300, 300],
               "detector_mm": [0.8, 0.8], "electronic_std": [15.0, 15.0], "bowtie": [1.5, 1.5],
               "modulation": [0.5, 0.5]}
BUDGET = ["schedule.epoch_samples=32", "schedule.batch=4", "schedule.early_stop_patience=3",
          "optim.lr=1e-4", "validation.max_slices=6", "validation.crop=256"]


def finetune_curve(model: str, data: Path, fractions: list[float], runs: Path, out: Path, epochs: int = 8,
                   quiet: bool = False) -> list[dict]:
    """One finetune per fraction (8 epochs: 64 steps of 4 crops); the table, CSV and figure into ``out``."""
    dataset = _target_dataset(data / SERIES, runs / "target.csv")
    overrides = [f"noise.scanner={json.dumps(TRAIN_NOISE)}", f"validation.scanner={json.dumps(TARGET_SCAN)}",
                 f"schedule.epochs={epochs}", *BUDGET]
    rows = []
    for fraction in fractions:
        run = runs / f"fraction-{fraction:g}"
        result = finetune(model, dataset, run, fraction=fraction, holdout=0.2, overrides=overrides, quiet=quiet)
        validations = list(csv.DictReader((run / "validation.csv").open()))
        start = validations[0]  # step 0: the model before fine-tuning
        provenance = json.loads((result.model / "manifest.json").read_text())["provenance"]
        best, seconds = provenance["validation"], provenance["training_seconds"]  # at the exported (best) step
        rows.append({"fraction": fraction, "train_slices": result.train_slices, "holdout_slices": result.holdout_slices,
                     "input_psnr_soft": float(start["input_psnr_soft"]),
                     "start_psnr_soft": float(start["output_psnr_soft"]),
                     "best_psnr_soft": result.best_psnr_soft, "best_step": result.best_step,
                     "steps_run": int(validations[-1]["step"]),
                     "start_rmse_hu_soft": float(start["output_rmse_hu_soft"]),
                     "best_rmse_hu_soft": float(best["output_rmse_hu_soft"]), "training_seconds": seconds})
    full = rows[-1]["best_psnr_soft"] - rows[-1]["start_psnr_soft"]
    for row in rows:
        row["gain_recovered"] = (row["best_psnr_soft"] - row["start_psnr_soft"]) / full if full > 0 else float("nan")
    _write(rows, model, out, epochs)
    return rows


def _target_dataset(series: Path, manifest: Path) -> Path:
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(f"patient,ndct,ldct,split\nthorax-141,{series.resolve()},,train\n")
    return manifest


def _write(rows: list[dict], model: str, out: Path, epochs: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "finetune-curve.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Fine-tuning `{model}` on a share of a new scanner's series", "",
             "Target: thorax-141 (Philips; test split of shared-ct-all.csv, though the bundled model's ancestor, "
             "the first model, saw its anatomy under one parallel-beam recipe), its own pixel size, and a noise "
             "recipe outside every training range: "
             f"{json.dumps(TARGET_SCAN)}. Held out: the last 20 % of the series ({rows[0]['holdout_slices']} slices, "
             "6 scored, 256 px centre). Soft-tissue window PSNR (dB) and RMSE (HU). Budget per run: "
             f"schedule.epochs={epochs}, {', '.join(BUDGET)} (training time: step time on a CPU shared with other "
             "work). Step 0 is the model before fine-tuning.", "",
             "| share of the series | training slices | input PSNR | before | after (best) | best step / run | "
             "RMSE before -> after | gain recovered | training time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['fraction']:.0%} | {row['train_slices']} | {row['input_psnr_soft']:.2f} | "
                     f"{row['start_psnr_soft']:.2f} | {row['best_psnr_soft']:.2f} | {row['best_step']} / "
                     f"{row['steps_run']} | {row['start_rmse_hu_soft']:.1f} -> {row['best_rmse_hu_soft']:.1f} | "
                     f"{row['gain_recovered']:.0%} | {row['training_seconds']:.0f} s |")
    (out / "finetune-curve.md").write_text("\n".join(lines) + "\n")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6), dpi=110)
    axis.plot([100 * r["fraction"] for r in rows], [r["best_psnr_soft"] for r in rows], "o-", label="fine-tuned")
    axis.axhline(rows[0]["start_psnr_soft"], color="grey", ls="--", label="before fine-tuning")
    axis.axhline(rows[0]["input_psnr_soft"], color="grey", ls=":", label="input (LDCT)")
    axis.set_xscale("log")
    axis.set_xlabel("share of the target series trained on (%)")
    axis.set_ylabel("held-out soft-tissue PSNR (dB)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "finetune-curve.png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 1.0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of 8 steps each (default 8)")
    parser.add_argument("--runs", type=Path, default=REPOSITORY / "runs" / "finetune-curve")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "methods" / "finetune")
    args = parser.parse_args(argv)
    for row in finetune_curve(args.model, args.data, sorted(args.fractions), args.runs, args.out, args.epochs):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
