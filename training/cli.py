"""``ldct-train``: train | stage1 | stage2, finetune, selfsup, export (model folder), evaluate, prepare, pack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from LDCTDenoiseLib.atomic import write_atomically
from LDCTDenoiseLib.errors import Cancelled, LDCTError

from .config import load_config
from .data import dataset_split
from .evaluate import evaluate, load_any_model, markdown_table
from .export import export_model
from .finetune import PRESET as FINETUNE_PRESET
from .finetune import finetune
from .methods import METHODS
from .model_card import write_model_card
from .noise_bank import config_bank
from .pack import DEVICE_TREE_LIMIT_MIB, pack_dataset, travelling_mib
from .selfsup import selfsup
from .trainer import Trainer
from .volumes import SeriesCache, training_volumes

RUNS = Path("runs")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except Cancelled as stopped:
        print(f"ldct-train: {stopped}", file=sys.stderr)
        return 130
    except (LDCTError, OSError, ValueError) as error:
        print(f"ldct-train: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def train_command(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.set + ([f"stage={args.stage}"] if args.stage else []))
    run = Path(args.out) if args.out else RUNS / config.name
    if args.resume is None and (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        raise LDCTError(f"{run} already holds checkpoints; pass --resume to continue it or --out NEW_FOLDER")
    resume = (run if args.resume == "last" else args.resume) if args.resume else None
    last = Trainer(config, run, resume, quiet=args.quiet).train()
    if last is not None:
        print(f"ldct-train: {config.stage} finished; last checkpoint {last}")


def finetune_command(args: argparse.Namespace) -> None:
    result = finetune(args.model, args.data, Path(args.out) if args.out else RUNS / "finetune", args.fraction,
                      args.holdout, args.config, args.set, args.quiet)
    print(f"ldct-train finetune: {result.train_slices} training slices, {result.holdout_slices} held out; best "
          f"soft-tissue PSNR {result.best_psnr_soft:.2f} dB at step {result.best_step}; model {result.model}")


def selfsup_command(args: argparse.Namespace) -> None:
    result = selfsup(args.model, args.data, Path(args.out) if args.out else RUNS / "selfsup", args.steps, args.minutes,
                     args.seed, args.from_scratch, args.resume, args.quiet)
    for note in result.notes:
        print(f"ldct-train selfsup: {note}", file=sys.stderr)
    print(f"ldct-train selfsup: {result.series_used} series; {result.steps} steps, best at step {result.best_step} "
          f"(held-out loss {result.validation_loss_before:.4g} -> {result.validation_loss_best:.4g}); model "
          f"{result.model} (card: {result.model / 'MODEL_CARD.md'})")


def methods_command(args: argparse.Namespace) -> None:
    for entry in METHODS.values():
        print(f"{entry.name} ({entry.architecture}): {entry.summary}")
        print(f"    {entry.reference}")
        presets = ", ".join(entry.presets) or "none"
        print(f"    presets: {presets}")


def export_command(args: argparse.Namespace) -> None:
    manifest = export_model(args.checkpoint, args.out, half=args.half, name=args.name, keep_noise_hu=args.keep_noise)
    print(f"ldct-train: exported {manifest}")


def card_command(args: argparse.Namespace) -> None:
    print(f"ldct-train: wrote {write_model_card(args.model, args.title, args.good, args.bad)}")


def evaluate_command(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.set)
    result = evaluate(
        load_any_model(args.model), config, args.split, args.dose, args.seed, args.max_slices, args.device, args.quiet
    )
    if args.out:
        write_atomically(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    low_dose = result["low_dose"]
    print(
        f"{result['split']} patients {', '.join(result['patients'])}; low dose {low_dose['dose_fraction']:g}, "
        f"seed {low_dose['seed']}; Gaussian sigma {result['gaussian_sigma_px']} px "
        f"(tuned on {result['gaussian_sigma_tuned_on']})"
    )
    print(markdown_table(result["summary"]))


def prepare_command(args: argparse.Namespace) -> None:
    """Decode every series and simulate the low-dose volumes (or the noise bank) a config needs, ahead of training."""
    config = load_config(args.config, args.set)
    data = config.data
    splits = dataset_split(data)
    cache = SeriesCache(data.cache, data.simulation_workers, args.quiet)
    bank = config_bank(config, training_volumes(config, splits["train"], cache), cache.folder)
    if bank is not None:
        bank.build(data.simulation_workers, args.quiet)
        print(f"noise bank: {len(bank.entries())} entries in {bank.folder}")
    for name, patients in splits.items():
        print(f"{name}: {', '.join(p.name for p in patients) or '-'}")
    print(f"cache: {cache.folder}")


def pack_command(args: argparse.Namespace) -> None:
    """Pack the training and validation series into a folder that travels to a lent GPU machine."""
    config = load_config(args.config, args.set)
    budget = args.budget_mib
    if budget is None:
        tree = travelling_mib(Path.cwd())
        budget = DEVICE_TREE_LIMIT_MIB - tree - args.reserve_mib
        print(f"ldct-train pack: the working tree that travels is {tree:.1f} MiB of {DEVICE_TREE_LIMIT_MIB:g}; "
              f"{args.reserve_mib:g} MiB kept for wheels; budget {budget:.1f} MiB")
        if budget < 4:
            raise LDCTError(f"only {budget:.1f} MiB are left for the pack; move large untracked files out of the "
                            "checkout, or the evaluation models aside (mv evaluation/models /tmp/) while a device "
                            "run is in flight, then pack again")
    cache = SeriesCache(config.data.cache, config.data.simulation_workers, args.quiet)
    packed = pack_dataset(config, Path(args.out), budget, cache)
    size = sum(p.nbytes for p in packed) / 2**20
    for split in ("train", "validation"):
        chosen = [p for p in packed if p.split == split]
        print(f"{split}: {len(chosen)} series, {sum(p.slices for p in chosen)} slices")
    print(f"ldct-train: packed {len(packed)} series, {size:.1f} MiB, into {args.out}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldct-train", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, summary, stage in (("train", "train any method's preset at the stage it names (see methods)", None),
                                 ("stage1", "pretrain on NDCT + noise", "stage1"),
                                 ("stage2", "WGAN-GP on unaligned LDCT/NDCT", "stage2")):
        command = commands.add_parser(name, help=summary)
        _config_arguments(command)
        command.add_argument("--out", help="run folder (default runs/<config name>)")
        command.add_argument(
            "--resume", nargs="?", const="last", help="continue from a checkpoint (default: the run's last)"
        )
        command.set_defaults(run=train_command, stage=stage)
    command = commands.add_parser("finetune", help="retrain a shipped model on a few of your own scans")
    command.add_argument("--model", required=True, help="installed model name (ldct-denoise models) or model folder")
    command.add_argument("--data", required=True, help="your normal-dose series: dataset folder or manifest")
    command.add_argument("--fraction", type=float, default=1.0, help="share of the training slices used (0..1]")
    command.add_argument("--holdout", type=float, default=0.2,
                         help="share of each series' slices (its end) kept for early stopping (default 0.2)")
    command.add_argument("--config", default=FINETUNE_PRESET, help=f"preset or YAML (default {FINETUNE_PRESET})")
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    command.add_argument("--out", help="run folder (default runs/finetune); the model is exported to OUT/model")
    command.add_argument("--quiet", action="store_true", help="no progress bars")
    command.set_defaults(run=finetune_command)
    command = commands.add_parser("selfsup", help="train on your own low-dose series alone (no normal dose needed)")
    command.add_argument("--data", required=True, help="a folder of low-dose series (DICOM folders or volume files)")
    command.add_argument("--model", help="model to start from: installed name or folder (default: the default model)")
    command.add_argument("--from-scratch", action="store_true", help="start from new weights of --model's network")
    command.add_argument("--steps", type=int, default=2000, help="steps in all, resumed ones included (default 2000)")
    command.add_argument("--minutes", type=float, default=0.0, help="also stop after this long (0: no limit)")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--out", help="run folder (default runs/selfsup); the model is exported to OUT/model")
    command.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    command.add_argument("--quiet", action="store_true", help="no progress bars")
    command.set_defaults(run=selfsup_command)
    command = commands.add_parser("methods", help="list the methods and their presets")
    command.set_defaults(run=methods_command)
    command = commands.add_parser("export", help="write the module's model folder from a checkpoint")
    command.add_argument("checkpoint", help="checkpoint file or run folder (its last checkpoint)")
    command.add_argument("--out", required=True, help="model folder, e.g. Resources/Models/default")
    command.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    command.add_argument("--name", default="default")
    command.add_argument("--keep-noise", type=float, default=0.0, metavar="HU",
                         help="the engine's default --keep-noise for this model (0: the whole correction)")
    command.set_defaults(run=export_command)
    command = commands.add_parser("card", help="draft MODEL/MODEL_CARD.md from what the manifest records")
    command.add_argument("model", help="exported model folder")
    command.add_argument("--title", default="", help="one line after the name")
    command.add_argument("--good", default="", help="what the model is good at (your judgement)")
    command.add_argument("--bad", default="", help="what it is bad at (your judgement)")
    command.set_defaults(run=card_command)
    command = commands.add_parser("evaluate", help="metrics of a model on the held-out patients")
    command.add_argument("model", help="exported model folder, checkpoint file or run folder")
    _config_arguments(command)
    command.add_argument("--split", default="test", choices=("train", "validation", "test"))
    command.add_argument("--dose", type=float, help="low-dose fraction (default validation.dose_fraction)")
    command.add_argument("--seed", type=int, help="noise seed (default validation.seed)")
    command.add_argument("--max-slices", type=int, default=0, help="evenly spaced slices per patient (0 = all)")
    command.add_argument("--device", default="auto")
    command.add_argument("--out", help="JSON file with every per-slice figure")
    command.set_defaults(run=evaluate_command)
    command = commands.add_parser("prepare", help="decode series, simulate low dose or the noise bank")
    _config_arguments(command)
    command.set_defaults(run=prepare_command)
    command = commands.add_parser("pack", help="int16 arrays of the training data, sized to travel to a GPU machine")
    _config_arguments(command)
    command.add_argument("--out", required=True, help="new folder, e.g. gpu-pack (ignored by git)")
    command.add_argument("--budget-mib", type=float,
                         help="size limit (default: 64 MiB less the working tree that travels and --reserve-mib)")
    command.add_argument("--reserve-mib", type=float, default=4.0, help="room kept for carried wheels (default 4)")
    command.set_defaults(run=pack_command)
    return parser


def _config_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", required=True, help="YAML file or preset name (training/methods/<name>/presets)")
    command.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. schedule.epochs=10"
    )
    command.add_argument("--quiet", action="store_true", help="no progress bars")


if __name__ == "__main__":
    sys.exit(main())
