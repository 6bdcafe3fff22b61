"""Export a training checkpoint as the module's model folder (safetensors + manifest with provenance)."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path, PureWindowsPath

import torch
from torch import nn

from LDCTDenoiseLib.errors import InputError, WeightsError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import DEFAULT_MODEL, MANIFEST_NAME, save_model, sha256_of
from LDCTDenoiseLib.networks import architecture

from .checkpoint import checkpoint_architecture, load_checkpoint, run_folder
from .methods import method

REPOSITORY = Path(__file__).resolve().parents[1]


def generator_from_checkpoint(state: dict) -> nn.Module:
    """The trained network of a checkpoint, of whichever registered architecture it trained."""
    generator = architecture(checkpoint_architecture(state)).build(state["config"]["model"])
    generator.load_state_dict(state["generator"])
    return generator.eval()


def export_model(
    checkpoint: str | Path, out: str | Path, half: bool = False, name: str = DEFAULT_MODEL, extra: dict | None = None,
    summary: str = "",
    keep_noise_hu: float = 0.0,
) -> Path:
    """Write ``out/manifest.json`` + ``out/generator.safetensors``; returns the manifest path.

    ``keep_noise_hu`` (the engine's default for this model, ``LDCTDenoiseLib.engine.noise_level``) is chosen on
    validation slices: the value with the best PSNR gain over light to heavy doses.
    """
    state = load_checkpoint(checkpoint)
    config = state["config"]
    recipe = method(config.get("method", "hu2024"))
    provenance = {
        "method": recipe.reference,
        "method_name": recipe.name,
        "stage": state["stage"],
        "steps": state["step"],
        "training_seconds": round(float(state.get("seconds", 0.0)), 1),
        "checkpoint": {"file": Path(state["path"]).name, "sha256": sha256_of(Path(state["path"]))},
        "initialised_from": _lineage(config.get("init_from")),
        "validation": _validation(state),
        "config": config,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"torch": torch.__version__, "python": platform.python_version(), "git": _git_commit()},
        "machine": _machine(),
        **(extra or {}),
    }
    provenance = portable(provenance)
    return save_model(
        generator_from_checkpoint(state),
        out,
        Normalization.from_dict(state["normalization"]),
        provenance,
        name=name,
        half=half,
        summary=summary or f"{recipe.name}: {recipe.summary} ({state['stage']}, {state['step']} steps)",
        inference={"keep_noise_hu": keep_noise_hu} if keep_noise_hu else None,
    )


def _machine() -> dict:
    """Where the export ran (the training machine, as runs are exported where they trained): CPU, cores, GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpu": gpu}


def _validation(state: dict) -> dict:
    """The run's validation figures at the exported step (validation.csv beside the checkpoint), if it ran."""
    try:
        rows = list(csv.DictReader((run_folder(Path(state["path"])) / "validation.csv").open()))
    except OSError:
        return {}
    row = next((r for r in rows if int(r["step"]) == state["step"]), None)
    return {k: float(v) for k, v in row.items() if k != "step"} if row else {}


def _lineage(source: str | None) -> list[dict]:
    """The runs this one started from (stage, steps, seconds), as far as their checkpoints are present."""
    chain = []
    while source and len(chain) < 10:
        try:
            state = load_checkpoint(source)
        except (InputError, WeightsError):  # an exported model, or a run no longer on this machine
            chain.append({"source": str(source), **_model_identity(Path(source))})
            break
        chain.append({"run": run_folder(Path(state["path"])).name, "stage": state["stage"], "steps": state["step"],
                      "training_seconds": round(float(state.get("seconds", 0.0)), 1),
                      "crop": state["config"]["data"]["crop"], "batch": state["config"]["schedule"]["batch"]})
        source = state["config"].get("init_from")
    return chain


def _model_identity(folder: Path) -> dict:
    """An exported model by name and weights checksum (what a reader can check), when its manifest is there."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {"model": manifest.get("name"), "sha256": manifest.get("sha256")}


def portable(value, root: Path = REPOSITORY):
    """``value`` with every absolute path made relative to the repository, or cut to its last name outside it.

    A manifest travels with its weights: the folders of the machine that made it mean nothing to a
    reader and may name a user or a patient.
    """
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, root) for item in value]
    if isinstance(value, str) and "\n" not in value and (value.startswith("/") or PureWindowsPath(value).drive):
        path = Path(value)
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return f".../{path.name}"
    return value


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
