"""Generator weights on disk: a safetensors file plus a JSON manifest with its SHA-256.

A model folder holds ``manifest.json`` and the weights file it names. Nothing here unpickles:
safetensors holds plain tensors only, and the checksum is verified before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_atomically
from ..errors import NoModelError, WeightsError
from ..networks import DEFAULT_ARCHITECTURE, architecture, architecture_of
from .catalog import (  # noqa: F401 - cache_dir, CACHE_ENV and installed_models are used from here
    CACHE_ENV,
    CARD_NAME,
    DEFAULT_MODEL,
    FORMAT,
    MANIFEST_NAME,
    InstalledModel,
    cache_dir,
    cached_models_dir,
    installed_models,
    model_roots,
)
from .normalization import Normalization

WEIGHTS_NAME = "generator.safetensors"
WEIGHTS_ENV = "LDCTDENOISE_WEIGHTS"


@dataclass
class LoadedModel:
    """A network ready for inference (any registered architecture), with the manifest it came from."""

    generator: nn.Module
    normalization: Normalization
    manifest: dict
    folder: Path | None = None
    name: str = field(default="")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "architecture": self.manifest.get("architecture", DEFAULT_ARCHITECTURE),
            "folder": str(self.folder) if self.folder else None,
            "sha256": self.manifest.get("sha256"),
            "config": self.manifest.get("config"),
            "normalization": self.manifest.get("normalization"),
            "provenance": self.manifest.get("provenance", {}),
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    generator: nn.Module,
    folder: str | Path,
    normalization: Normalization,
    provenance: dict,
    name: str = DEFAULT_MODEL,
    half: bool = False,
    summary: str = "",
    inference: dict | None = None,
) -> Path:
    """Write ``generator.safetensors`` and ``manifest.json`` into folder; returns the manifest.

    The manifest names the network's registered architecture and its config. ``half`` stores fp16
    tensors (half the size); they are cast back to fp32 on loading. ``summary`` is the one line the
    model lists show; ``inference`` the engine's defaults for this model (``keep_noise_hu``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.half() if half and value.is_floating_point() else value).contiguous().cpu()
        for key, value in generator.state_dict().items()
    }
    weights_path = folder / WEIGHTS_NAME
    write_atomically(weights_path, lambda tmp: save_file(state, str(tmp)))
    manifest = {
        "format": FORMAT,
        "name": name,
        "architecture": architecture_of(generator).name,
        "summary": summary,
        "config": generator.config.to_dict(),
        "normalization": normalization.to_dict(),
        "weights_file": WEIGHTS_NAME,
        "dtype": "float16" if half else "float32",
        "sha256": sha256_of(weights_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        **({"inference": inference} if inference else {}),
    }
    manifest_path = folder / MANIFEST_NAME
    write_atomically(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    return manifest_path


def load_model(path: str | Path) -> LoadedModel:
    """Load a model from a manifest, its folder, or the weights file beside a manifest."""
    manifest_path = _manifest_path(Path(path))
    manifest = _read_manifest(manifest_path)
    generator, normalization = _network(manifest, manifest_path)
    weights_path = _weights_path(manifest, manifest_path)
    if not weights_path.is_file():
        raise WeightsError(
            f"weights file {weights_path} named by {manifest_path} is missing; "
            "copy the whole model folder (manifest and weights) together"
        )
    actual = sha256_of(weights_path)
    if actual != manifest["sha256"]:
        raise WeightsError(
            f"checksum mismatch for {weights_path}: manifest says {manifest['sha256']}, "
            f"file has {actual}. The file is truncated, corrupt or was replaced; "
            "export or copy the model folder again"
        )
    try:
        state = load_file(str(weights_path))
    except SafetensorError as error:
        raise WeightsError(f"{weights_path} is not a valid safetensors file: {error}") from error
    config = generator.config
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    missing, unexpected = _key_mismatch(generator, state)
    if missing or unexpected:
        raise WeightsError(
            f"{weights_path} does not fit the {manifest['architecture']} with config {config.to_dict()}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    generator.load_state_dict(state)
    generator.eval()
    return LoadedModel(
        generator=generator,
        normalization=normalization,
        manifest=manifest,
        folder=manifest_path.parent,
        name=manifest.get("name", manifest_path.parent.name),
    )


def model_search_paths(name: str = DEFAULT_MODEL) -> list[Path]:
    """Every manifest location looked at, in order, when no weights are given explicitly."""
    paths = []
    if os.environ.get(WEIGHTS_ENV):
        paths.append(_as_manifest(Path(os.environ[WEIGHTS_ENV]).expanduser()))
    return paths + [root / name / MANIFEST_NAME for root in model_roots()]


def find_model(weights: str | Path | None = None, name: str = DEFAULT_MODEL) -> LoadedModel:
    """Load the explicit weights, else ``$LDCTDENOISE_WEIGHTS``, else the first model found on the search path.

    ``weights`` is a model folder, manifest or weights file, or the name of an installed model
    (``wgan-vgg``: see :func:`installed_models`). A ``$LDCTDENOISE_WEIGHTS`` that names no model is an
    error, never a silent fall-back to another model.
    """
    if weights is not None:
        return _installed(str(weights)) if is_model_name(weights) else load_model(weights)
    if os.environ.get(WEIGHTS_ENV):
        try:
            return load_model(Path(os.environ[WEIGHTS_ENV]).expanduser())
        except WeightsError as error:
            raise WeightsError(f"${WEIGHTS_ENV}: {error}") from None
    searched = model_search_paths(name)
    for manifest in searched:
        if manifest.is_file():
            return load_model(manifest)
    listing = "; ".join(str(path) for path in searched)
    raise NoModelError(
        "no trained model is bundled yet and none was found (looked for " + listing + "). "
        "Random weights are never used to denoise. Train and export one with the training "
        "subpackage (training/; see README, 'Models'), then pass --weights MODEL_FOLDER or copy the "
        f"folder to {cached_models_dir() / name}"
    )


def is_model_name(spec: str | Path) -> bool:
    """A bare word that is not an existing path (``wgan-vgg``), as opposed to a folder or file."""
    text = str(spec)
    return bool(text) and not Path(text).expanduser().exists() and "/" not in text and "\\" not in text \
        and not text.endswith((".json", ".safetensors"))


def install_model(folder: str | Path, name: str | None = None) -> Path:
    """Copy a verified model folder into the user cache, so ``--model NAME`` and the Slicer selector find it.

    The checksum is verified first, and the copy is made beside its destination and renamed into
    place, so an interrupted install leaves no half-copied model that would list as installed.
    """
    source = Path(folder).expanduser()
    model = load_model(source)
    name = name or source.name
    if not is_model_name(name):
        raise WeightsError(f"{name!r} cannot be a model's name: use one word without slashes, e.g. --as my-model")
    target = cached_models_dir() / name
    if target.exists():
        raise WeightsError(f"a model named {name!r} is already installed at {target}; remove that folder first, "
                           "or install under another name with --as")
    staging = target.with_name(f".{name}.installing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest = _as_manifest(source)
    for path in (manifest, _weights_path(model.manifest, manifest), manifest.with_name(CARD_NAME)):
        if path.is_file():
            shutil.copy2(path, staging / path.name)
    staging.rename(target)
    return target


def _installed(name: str) -> LoadedModel:
    for root in model_roots():
        if (root / name / MANIFEST_NAME).is_file():
            model = load_model(root / name)
            model.name = name  # the name it was asked for, which is its folder's
            return model
    names = ", ".join(model.name for model in installed_models()) or "none"
    raise NoModelError(f"no installed model named {name!r} (installed: {names}); give a model folder instead, or "
                       f"install one: ldct-denoise models --install FOLDER --as {name}")


def _manifest_path(path: Path) -> Path:
    manifest = _as_manifest(path)
    if not manifest.is_file():
        raise WeightsError(
            f"no model manifest at {manifest}; a model folder holds {MANIFEST_NAME} "
            f"and {WEIGHTS_NAME} (written by `ldct-train export`)"
        )
    return manifest


def _as_manifest(path: Path) -> Path:
    if path.is_dir():
        return path / MANIFEST_NAME
    if path.suffix == ".safetensors":
        return path.with_name(MANIFEST_NAME)
    return path


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"cannot read model manifest {path}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an LDCTDenoise model manifest (format {FORMAT})")
    try:
        architecture(manifest.get("architecture"))
    except ValueError as error:
        raise WeightsError(f"{path}: {error}; update LDCTDenoise to run it") from None
    required = ("config", "normalization", "weights_file", "sha256")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise WeightsError(f"model manifest {path} lacks {missing}")
    return manifest


def _network(manifest: dict, path: Path) -> tuple[nn.Module, Normalization]:
    """The network the manifest's architecture and config describe, and its normalisation.

    A bad field is a weights error.
    """
    entry = architecture(manifest["architecture"])
    try:
        generator = entry.build(manifest["config"])
    except (ValueError, TypeError) as error:  # unknown keys, wrong types, depth 0, negative widths
        raise WeightsError(f"model manifest {path}: config {manifest['config']!r} does not describe a "
                           f"{entry.name} ({error}); export the model again") from None
    try:
        normalization = Normalization.from_dict(manifest["normalization"])
        if not np.isfinite([normalization.hu_min, normalization.hu_max]).all():
            raise ValueError("the range must be finite")
    except Exception as error:
        raise WeightsError(f"model manifest {path}: normalization {manifest['normalization']!r} is invalid "
                           f"({error}); export the model again") from None
    return generator, normalization


def _weights_path(manifest: dict, path: Path) -> Path:
    """The weights file, which must be a file name inside the model folder (nothing read outside it)."""
    name = manifest["weights_file"]
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise WeightsError(f"model manifest {path}: weights_file {name!r} must be a file name in the model "
                           "folder, not a path; export the model again")
    return path.parent / name


def _key_mismatch(generator: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list]:
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    return missing + wrong_shape, unexpected
