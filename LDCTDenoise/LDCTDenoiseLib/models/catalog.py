"""Which models are installed, by name: bundled (``Resources/Models/<name>``) or in the user cache.

Standard library only (``platformdirs`` when present), so the Slicer module lists the models in
its selector before torch is installed. Loading and verifying a model is ``weights.load_model``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..resources import resources_dirs

MANIFEST_NAME = "manifest.json"
CARD_NAME = "MODEL_CARD.md"
FORMAT = "ldctdenoise-weights/1"
DEFAULT_MODEL = "default"
CACHE_ENV = "LDCTDENOISE_CACHE_DIR"


@dataclass(frozen=True)
class InstalledModel:
    name: str
    folder: Path
    architecture: str
    summary: str


def cache_dir() -> Path:
    """The user's cache folder for models and compiled kernels (``$LDCTDENOISE_CACHE_DIR`` wins)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("LDCTDenoise", appauthor=False))


def cached_models_dir() -> Path:
    """Where models installed by the user live: ``<user cache>/models/<name>``."""
    return cache_dir() / "models"


def model_roots() -> list[Path]:
    """Folders whose subfolders are models, in search order (the first folder of a name wins)."""
    roots = [folder / "Models" for folder in resources_dirs()]
    try:
        roots.append(cached_models_dir())
    except ImportError:  # platformdirs not installed yet (a fresh Slicer): bundled models only
        pass
    return roots


def installed_models() -> list[InstalledModel]:
    """Every model that loads by name, in search order, with its one-line summary.

    Folders without a readable manifest are left out (a half-copied folder does not break the list).
    """
    found: dict[str, InstalledModel] = {}
    for root in model_roots():
        for manifest_path in sorted(root.glob(f"*/{MANIFEST_NAME}")):
            folder = manifest_path.parent
            manifest = _manifest(manifest_path)
            if folder.name in found or manifest is None:
                continue
            found[folder.name] = InstalledModel(folder.name, folder, str(manifest.get("architecture")),
                                                model_summary(manifest, folder))
    return list(found.values())


def model_summary(manifest: dict, folder: Path) -> str:
    """One line for model lists: the manifest's summary, else the card's title, else the architecture."""
    if manifest.get("summary"):
        return str(manifest["summary"])
    card = folder / CARD_NAME
    if card.is_file():
        title = card.read_text(errors="replace").partition("\n")[0].lstrip("# ").strip()
        return title.removeprefix("Model card:").strip()
    return str(manifest.get("architecture"))


def _manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None
