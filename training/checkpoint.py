"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a ``torch.save`` dict of tensors, numbers, strings and plain containers only,
so it loads with ``weights_only=True`` (no pickle of arbitrary objects).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.errors import InputError, WeightsError
from LDCTDenoiseLib.models.weights import MANIFEST_NAME, load_model
from LDCTDenoiseLib.networks import DEFAULT_ARCHITECTURE

CHECKPOINTS = "checkpoints"
PATTERN = re.compile(r"step-(\d+)\.pt$")


def checkpoint_path(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:08d}.pt"


def save_checkpoint(state: dict, run: Path, keep: int) -> Path:
    path = checkpoint_path(run, state["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: ``RUN/checkpoints/step-*.pt``, or a file in the run itself (``RUN/best.pt``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent


def list_checkpoints(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = run / CHECKPOINTS
    found = [p for p in folder.glob("step-*.pt") if PATTERN.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its latest checkpoint)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise InputError(
                f"{path} holds no checkpoints ({CHECKPOINTS}/step-*.pt); give a checkpoint or a run folder"
            )
        return found[-1]
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, or pickled objects
        raise WeightsError(f"{path} is not a readable training checkpoint ({str(error).splitlines()[0]})") from error
    if not isinstance(state, dict) or "generator" not in state or "step" not in state:
        raise WeightsError(f"{path} is not a training checkpoint of this project (no generator/step)")
    state["path"] = str(path)
    return state


def is_exported_model(path: Path) -> bool:
    """An exported model folder, its manifest or its weights file (not a training checkpoint)."""
    return (path / MANIFEST_NAME).is_file() or path.name == MANIFEST_NAME or path.suffix == ".safetensors"


def generator_state(source: str | Path) -> tuple[dict, dict, str]:
    """(state dict, model config, architecture) of a network from a checkpoint, a run folder or an exported model."""
    source = Path(source).expanduser()
    if is_exported_model(source):
        loaded = load_model(source)
        return loaded.generator.state_dict(), dict(loaded.manifest["config"]), loaded.manifest["architecture"]
    state = load_checkpoint(source)
    return state["generator"], dict(state["config"]["model"]), checkpoint_architecture(state)


def checkpoint_architecture(state: dict) -> str:
    """The architecture a checkpoint trained (checkpoints from before the registry trained Hu et al.'s)."""
    return state["config"].get("architecture", DEFAULT_ARCHITECTURE)
