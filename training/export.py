"""Export a training checkpoint as the module's model folder (safetensors + manifest with provenance)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from LDCTDenoiseLib.errors import InputError, WeightsError
from LDCTDenoiseLib.model import Generator, GeneratorConfig
from LDCTDenoiseLib.normalization import Normalization
from LDCTDenoiseLib.weights import DEFAULT_MODEL, save_model, sha256_of

from .checkpoint import load_checkpoint

PAPER = "Hu et al., Quant Imaging Med Surg 2024;14(1):335-351, doi 10.21037/qims-23-403"


def generator_from_checkpoint(state: dict) -> Generator:
    generator = Generator(GeneratorConfig.from_dict(state["config"]["model"]))
    generator.load_state_dict(state["generator"])
    return generator.eval()


def export_model(
    checkpoint: str | Path, out: str | Path, half: bool = False, name: str = DEFAULT_MODEL, extra: dict | None = None
) -> Path:
    """Write ``out/manifest.json`` + ``out/generator.safetensors``; returns the manifest path."""
    state = load_checkpoint(checkpoint)
    config = state["config"]
    provenance = {
        "method": PAPER,
        "stage": state["stage"],
        "steps": state["step"],
        "training_seconds": round(float(state.get("seconds", 0.0)), 1),
        "checkpoint": {"file": Path(state["path"]).name, "sha256": sha256_of(Path(state["path"]))},
        "initialised_from": _lineage(config.get("init_from")),
        "config": config,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"torch": torch.__version__, "python": platform.python_version(), "git": _git_commit()},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        **(extra or {}),
    }
    return save_model(
        generator_from_checkpoint(state),
        out,
        Normalization.from_dict(state["normalization"]),
        provenance,
        name=name,
        half=half,
    )


def _lineage(source: str | None) -> list[dict]:
    """The runs this one started from (stage, steps, seconds), as far as their checkpoints are present."""
    chain = []
    while source and len(chain) < 10:
        try:
            state = load_checkpoint(source)
        except (InputError, WeightsError):  # an exported model, or a run no longer on this machine
            chain.append({"source": str(source)})
            break
        chain.append({"run": Path(state["path"]).parent.parent.name, "stage": state["stage"], "steps": state["step"],
                      "training_seconds": round(float(state.get("seconds", 0.0)), 1),
                      "crop": state["config"]["data"]["crop"], "batch": state["config"]["schedule"]["batch"]})
        source = state["config"].get("init_from")
    return chain


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
