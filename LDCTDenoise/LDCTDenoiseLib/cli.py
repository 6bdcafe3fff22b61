"""``ldct-denoise``: denoise, simulate low dose, compare with an NDCT, make a phantom, show the setup, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .compare.alignment import REGISTRATIONS
from .compare.metrics import DEFAULT_WINDOWS, Window
from .engine.adaptation import Adaptation, adapted_for, save_adapted
from .engine.inference import VolumeDenoiser
from .engine.noise_level import applied_summary
from .engine.options import EngineOptions, add_engine_arguments, options_from_args
from .errors import InputError, LDCTError, OutputError
from .io import Volume, check_output_format, read_volume, write_volume
from .models.download import download_model
from .models.weights import find_model, install_model, installed_models, model_search_paths
from .signals import signals_answered
from .simulation import FILTERS, ProjectionNoise, ScannerNoise, make_phantom, simulate_low_dose

# The demo's low-dose scan: about a quarter dose on a clinical scanner (40 HU more noise at the body
# centre, a standard kernel, 984 views, bowtie and tube-current modulation).
DEMO_SCAN = ScannerNoise(added_noise_hu=40.0, filter="shepp-logan", cutoff=0.9, views=984, electronic_std=10.0,
                         bowtie=1.5, modulation=0.5)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return signals_answered(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        summary = args.run(args)
    except (LDCTError, OSError) as error:
        print(f"ldct-denoise: error: {_one_line(error)}", file=sys.stderr)
        return 1
    _report(summary, args.json)
    return 0


def denoise_command(args: argparse.Namespace) -> dict:
    _check_output(args.output, args.input, args.overwrite)
    options = options_from_args(args)
    if args.save_adapted is not None:
        _check_adapted_output(args.save_adapted, options)
    model = find_model(args.weights)
    volume = read_volume(args.input, args.series, args.strict_geometry)
    _print_notes(volume)
    adaptation = _adapt_with_progress(model, volume, options, args.quiet)
    denoiser = VolumeDenoiser(adaptation.model, options)
    denoised = _with_progress(denoiser, volume, "denoising", args.quiet)
    written = write_volume(denoiser.labelled(volume, denoised), args.output, denoiser.description)
    saved = {"saved_adapted": str(save_adapted(adaptation, args.save_adapted))} if args.save_adapted else {}
    return {
        "command": "denoise", "input": str(args.input), "output": str(args.output),
        "files_written": len(written), "shape": list(volume.array.shape), "spacing_mm": list(volume.spacing),
        "model": model.describe(), "run": denoiser.last_run, "hu": _hu_summary(volume.array, denoised),
        "notes": volume.metadata.get("notes", []), **_adaptation_summary(adaptation), **saved,
    }


def _check_adapted_output(folder: Path, options: EngineOptions) -> None:
    if not options.adapts:
        raise InputError("--save-adapted needs --adapt MINUTES (or --adapt-steps N): there is nothing to save")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"--save-adapted {folder} exists and is not an empty folder; choose a new folder")
    if not folder.resolve().parent.is_dir():
        raise OutputError(f"--save-adapted: folder {folder.resolve().parent} does not exist; create it first")


def _adapt_with_progress(model, volume: Volume, options: EngineOptions, quiet: bool) -> Adaptation:
    from tqdm import tqdm

    if not options.adapts:
        return adapted_for(model, volume, options)
    unit = "step" if options.adapt_minutes == 0 else "s"
    with tqdm(unit=unit, desc="adapting to the scan", disable=quiet, file=sys.stderr) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        adaptation = adapted_for(model, volume, options, progress)
    for note in adaptation.summary.get("notes", []):
        print(f"ldct-denoise: note: {note}", file=sys.stderr)
    return adaptation


def _adaptation_summary(adaptation: Adaptation) -> dict:
    return {"adaptation": {"adapted": adaptation.adapted, **adaptation.summary}} if adaptation.summary else {}


def simulate_command(args: argparse.Namespace) -> dict:
    _check_output(args.output, args.input, args.overwrite)
    volume = read_volume(args.input, args.series, args.strict_geometry)
    _print_notes(volume)
    low_dose = _simulate_with_progress(volume, _simulation_settings(args), args.seed, args.quiet)
    written = write_volume(low_dose, args.output)
    return {
        "command": "simulate", "input": str(args.input), "output": str(args.output),
        "files_written": len(written), "simulation": low_dose.metadata["simulation"],
        "added_noise_std_hu": float(np.std(low_dose.array - volume.array)),
    }


def _simulation_settings(args: argparse.Namespace) -> ProjectionNoise | ScannerNoise:
    """Scanner noise when --noise-hu is given, else the fixed projection recipe at --dose."""
    if args.noise_hu is None:
        return ProjectionNoise(dose_fraction=args.dose, photons_per_ray=args.photons, views=args.views or 360)
    return ScannerNoise(added_noise_hu=args.noise_hu, filter=args.filter, cutoff=args.cutoff,
                        views=args.views or DEMO_SCAN.views, detector_mm=args.detector_mm,
                        electronic_std=args.electronic, bowtie=args.bowtie, modulation=args.modulation)


def phantom_command(args: argparse.Namespace) -> dict:
    _check_output(args.output, None, args.overwrite)
    volume = make_phantom((args.slices, args.size, args.size), seed=args.seed)
    write_volume(volume, args.output)
    return {"command": "phantom", "output": str(args.output), "shape": list(volume.array.shape),
            "spacing_mm": list(volume.spacing)}


def compare_command(args: argparse.Namespace) -> dict:
    from .compare.report import body_region, compare, parse_roi, write_report

    if not args.volume:
        raise InputError("give the volumes to compare with --volume NAME=PATH (the first sets the grid: the LDCT)")
    volumes = {}
    for item in args.volume:
        name, _, path = item.partition("=")
        if not name or not path:
            raise InputError(f"--volume {item!r}: write NAME=PATH, e.g. --volume LDCT=low_dose.nrrd")
        if name in volumes:
            raise InputError(f"--volume names must be unique; {name!r} is given twice")
        volumes[name] = read_volume(path)
    regions = [parse_roi(text) for text in args.roi] or [body_region()]
    windows = tuple(_window(text) for text in args.window) if args.window else DEFAULT_WINDOWS
    report = compare(read_volume(args.ndct), volumes, regions, args.register, windows)
    inputs = {"ndct": str(args.ndct), "volumes": dict(item.partition("=")[::2] for item in args.volume),
              "regions": args.roi or ["body (default)"]}
    written = write_report(report, args.out, inputs)
    for warning in report.warnings:
        print(f"ldct-denoise: warning: {warning}", file=sys.stderr)
    return {"command": "compare", "out": str(args.out), "files": [p.name for p in written],
            "alignment": report.alignment.to_dict(), "notes": report.notes,
            "means": [{"region": r.region.name, **{k: m[k] for k in ("window", "method", "psnr", "ssim", "rmse_hu")}}
                      for r in report.regions for m in r.metrics["means"]]}


def info_command(args: argparse.Namespace) -> dict:
    import torch

    from .engine.inference import resolve_device

    models = []
    for manifest in model_search_paths():
        models.append({"path": str(manifest), "present": manifest.is_file()})
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "command": "info", "ldctdenoise": __version__, "python": platform.python_version(),
        "torch": torch.__version__, "cuda_devices": cuda, "mps": torch.backends.mps.is_available(),
        "auto_device": str(resolve_device("auto")), "cpu_threads": torch.get_num_threads(),
        "models_searched": models,
    }


def models_command(args: argparse.Namespace) -> dict:
    """Every model that loads by name, with its architecture and one-line summary (after installing one)."""
    installed = {"installed": str(_install(args))} if args.install else {}
    return {"command": "models", **installed, "models": {
        model.name: {"architecture": model.architecture, "summary": model.summary, "folder": str(model.folder)}
        for model in installed_models()}}


def _install(args: argparse.Namespace) -> Path:
    """A model folder copied in, or (a URL) a zipped model downloaded, checked against --sha256 and installed."""
    if not args.install.startswith(("https://", "http://")):
        if args.sha256:
            raise InputError("--sha256 checks a downloaded archive; a model folder carries its own checksum")
        return install_model(args.install, args.name)
    if not args.sha256:
        raise InputError("--install URL needs --sha256 HEX (published with the model): nothing is loaded unchecked")
    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc="downloading the model", disable=args.quiet, file=sys.stderr) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return download_model(args.install, args.sha256, args.name, progress)


def demo_command(args: argparse.Namespace) -> dict:
    """The main job on built-in defaults: real CT if present, else a phantom; low dose; denoise."""
    out = Path(args.out)
    model = find_model(args.weights)  # first, so nothing is computed or written without a model
    normal_dose, source = _demo_input(args.data)
    low_dose = _simulate_with_progress(normal_dose, DEMO_SCAN, seed=0, quiet=args.quiet)
    options = options_from_args(args)
    adaptation = _adapt_with_progress(model, low_dose, options, args.quiet)
    denoiser = VolumeDenoiser(adaptation.model, options)
    denoised = _with_progress(denoiser, low_dose, "denoising", args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    write_volume(normal_dose.with_array(normal_dose.array.astype(np.float32)), out / "normal_dose.nrrd")
    write_volume(low_dose, out / "low_dose.nrrd")
    write_volume(denoiser.labelled(low_dose, denoised), out / "denoised.nrrd")
    summary = {
        "command": "demo", "source": source, "output": str(out), "model": model.describe(), "run": denoiser.last_run,
        "simulation": low_dose.metadata["simulation"], **_adaptation_summary(adaptation),
        "rmse_hu_vs_normal_dose": {
            "low_dose": _rmse(low_dose.array, normal_dose.array),
            "denoised": _rmse(denoised, normal_dose.array),
            "body_mask": "normal-dose HU > -500",
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print_notes(volume: Volume) -> None:
    """What the reader chose or left out, on stderr: the user sees it, --json output stays clean."""
    for note in volume.metadata.get("notes", []):
        print(f"ldct-denoise: note: {note}", file=sys.stderr)


def _demo_input(data: str | None) -> tuple[Volume, str]:
    source = Path(data) if data else _default_data_folder()
    if source is not None:
        return read_volume(source), str(source)
    return make_phantom((16, 512, 512)), "procedural phantom (no real CT found)"


def _default_data_folder() -> Path | None:
    """``../shared/data`` beside the checkout, when it is there (developer machines and CI).

    LIDC-IDRI-0003 is the series the bundled model was never trained or tuned on.
    """
    checkout = Path(__file__).resolve().parents[2]
    folder = checkout.parent / "shared" / "data" / "ct" / "lidc-idri" / "LIDC-IDRI-0003"
    return folder if folder.is_dir() else None


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    body = b > -500
    return round(float(np.sqrt(np.mean((a[body] - b[body]) ** 2))), 2)


def _hu_summary(before: np.ndarray, after: np.ndarray) -> dict:
    return {
        "input_mean": round(float(before.mean()), 2), "output_mean": round(float(after.mean()), 2),
        "mean_abs_change": round(float(np.mean(np.abs(after - before))), 2),
    }


def _with_progress(denoiser: VolumeDenoiser, volume: Volume, label: str, quiet: bool) -> np.ndarray:
    from tqdm import tqdm

    with tqdm(total=volume.array.shape[0], unit="slice", desc=label, disable=quiet, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return denoiser(volume.array, progress=progress, header_kernel=volume.metadata.get("convolution_kernel"))


def _simulate_with_progress(volume: Volume, settings: ProjectionNoise | ScannerNoise, seed: int,
                            quiet: bool) -> Volume:
    from tqdm import tqdm

    total = volume.array.shape[0]
    with tqdm(total=total, unit="slice", desc="simulating low dose", disable=quiet, file=sys.stderr) as bar:
        return simulate_low_dose(volume, settings, seed, progress=lambda done, total: bar.update(done - bar.n))


def _check_output(output: Path, input_path: Path | None, overwrite: bool) -> None:
    """Everything about the output that can be known before the work: checked first, not after minutes."""
    if input_path is not None and output.resolve() == Path(input_path).resolve():
        raise OutputError(f"output {output} is the input; choose another path (inputs are never modified)")
    if input_path is not None and Path(input_path).is_dir() and Path(input_path).resolve() in output.resolve().parents:
        raise OutputError(f"output {output} lies inside the input folder {input_path}; the next read of that folder "
                          "would find two series. Choose a path outside it")
    check_output_format(output)
    parent = output.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable; choose another output path")
    if output.is_dir():
        if any(output.iterdir()):
            raise OutputError(f"{output} is a folder that is not empty; DICOM output goes into a new folder")
    elif output.exists() and not overwrite:
        raise OutputError(f"{output} already exists; choose a new path or pass --overwrite (files only)")


def _report(summary: dict, as_json: bool) -> None:
    """The whole record with --json; otherwise a few lines a person reads (the model in one line)."""
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key == "model":
            value = _model_line(value)
        elif key == "run":
            value = (f"{value['slices']} slices on {value['device']} ({value['runtime']}, {value['precision']}), "
                     f"{value['slices_per_second']} slices/s, strength {value['strength_percent']:g} %"
                     + applied_summary(value))
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def _model_line(described: dict) -> str:
    """Name, method, stage, steps and training data of a model manifest, in one line."""
    provenance = described.get("provenance") or {}
    dataset = ((provenance.get("config") or {}).get("data") or {}).get("dataset")
    method = provenance.get("method_name") or str(provenance.get("method") or "").split(",")[0]
    facts = [fact for fact in (method, provenance.get("stage")) if fact]
    if provenance.get("steps"):
        facts.append(f"{provenance['steps']} steps")
    if dataset:
        facts.append(f"trained on {Path(str(dataset)).name}")
    return f"{described.get('name', '?')}" + (f" ({', '.join(facts)})" if facts else "")


def _window(text: str) -> Window:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window {text!r}: write LOW,HIGH in HU, e.g. -160,240") from None
    if high <= low:
        raise InputError(f"--window {text!r}: HIGH must exceed LOW")
    return Window(f"window {low:g}..{high:g}", low, high)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldct-denoise", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ldct-denoise {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        sub.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        return sub

    sub = command("denoise", denoise_command, "denoise a CT volume (DICOM folder or volume file)")
    sub.add_argument("input", type=Path, help="DICOM series folder or .nrrd/.nii/.nii.gz/.mha file")
    sub.add_argument("output", type=Path, help="volume file, or a new folder for a derived DICOM series")
    sub.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    sub.add_argument("--strict-geometry", action="store_true",
                     help="refuse a gantry-tilted series instead of resampling it onto an untilted grid")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_engine_arguments(sub)
    sub.add_argument("--save-adapted", type=Path, metavar="DIR",
                     help="with --adapt: also save the adapted model as a model folder (usable as --model DIR)")

    sub = command("simulate", simulate_command, "make a low-dose volume from a normal-dose one (projection noise)")
    sub.add_argument("input", type=Path)
    sub.add_argument("output", type=Path)
    sub.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    sub.add_argument("--strict-geometry", action="store_true",
                     help="refuse a gantry-tilted series instead of resampling it onto an untilted grid")
    sub.add_argument("--dose", type=float, default=ProjectionNoise.dose_fraction, help="low dose / normal dose")
    sub.add_argument("--photons", type=float, default=ProjectionNoise.photons_per_ray, help="normal-dose I0 per ray")
    sub.add_argument("--views", type=int, help="projection angles: over 180 degrees (default 360), or per rotation "
                                               f"with --noise-hu (default {DEMO_SCAN.views})")
    sub.add_argument("--noise-hu", type=float, help="scanner noise instead: its std at the body centre (HU)")
    sub.add_argument("--filter", choices=FILTERS, default=DEMO_SCAN.filter, help="reconstruction filter (--noise-hu)")
    sub.add_argument("--cutoff", type=float, default=DEMO_SCAN.cutoff, help="filter cutoff, fraction of Nyquist")
    sub.add_argument("--detector-mm", type=float, default=0.0, help="detector bin at the isocentre; 0 = pixel size")
    sub.add_argument("--electronic", type=float, default=DEMO_SCAN.electronic_std, help="electronic noise (counts)")
    sub.add_argument("--bowtie", type=float, default=DEMO_SCAN.bowtie, help="bowtie strength (0 none .. 3 strong)")
    sub.add_argument("--modulation", type=float, default=DEMO_SCAN.modulation,
                     help="tube-current modulation (0 constant .. 1 full)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--overwrite", action="store_true")

    sub = command("phantom", phantom_command, "write a procedural chest phantom in HU")
    sub.add_argument("output", type=Path)
    sub.add_argument("--slices", type=int, default=16)
    sub.add_argument("--size", type=int, default=256, help="rows and columns")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--overwrite", action="store_true")

    sub = command("compare", compare_command, "PSNR/SSIM/RMSE and HU densities of volumes against an NDCT in regions")
    sub.add_argument("--ndct", required=True, type=Path, help="normal-dose CT of the same patient (the reference)")
    sub.add_argument("--volume", action="append", default=[], metavar="NAME=PATH",
                     help="a volume to compare (repeat); the first sets the grid, e.g. LDCT=low.nrrd")
    sub.add_argument("--roi", action="append", default=[], metavar="NAME=SPEC",
                     help="region (repeat): NAME=box:CX,CY,CZ:SX,SY,SZ[:RAS], NAME=bounds:X0,X1,Y0,Y1,Z0,Z1[:RAS], "
                          "NAME=label:PATH[:VALUE] or NAME=hu:LOW,HIGH (NDCT HU in the body; mm, LPS unless :RAS)")
    sub.add_argument("--register", default="none", choices=REGISTRATIONS,
                     help="register the NDCT to the first volume first (default: scanner coordinates only)")
    sub.add_argument("--window", action="append", metavar="LOW,HIGH",
                     help="HU window for the metrics, written --window=LOW,HIGH (repeat; default soft tissue "
                          "-160,240 and full range -1024,3072)")
    sub.add_argument("--out", required=True, type=Path, help="new folder for CSV, JSON, table.md and figures")

    command("info", info_command, "show devices, torch and where models are looked for")
    sub = command("models", models_command, "list the installed models (usable as --model NAME)")
    sub.add_argument("--install", metavar="FOLDER_OR_URL",
                     help="first install a model into the user cache: a model folder (its checksum verified), e.g. "
                          "evaluation/models/pix2pix, or the https:// address of a zipped model folder")
    sub.add_argument("--sha256", metavar="HEX", help="with --install URL: the archive's published SHA-256")
    sub.add_argument("--as", dest="name", help="the installed name (default: the folder's name)")

    sub = command("demo", demo_command, "simulate low dose on real CT (or a phantom) and denoise it")
    sub.add_argument("--out", default="demo-output", help="folder for the volumes and summary.json")
    sub.add_argument("--data", help="normal-dose DICOM folder or volume (default: ../shared/data when present)")
    add_engine_arguments(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
