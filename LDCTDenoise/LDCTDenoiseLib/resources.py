"""Where the top-level ``Resources/`` folder (UI, icons, bundled models) is, in every layout.

Imports nothing beyond the standard library: the Slicer module calls it before torch is installed.
In a source checkout the library is ``LDCTDenoise/LDCTDenoiseLib`` and the resources are
``Resources/`` beside ``LDCTDenoise/``; a built extension copies them to the same place relative to
the module folder (``lib/Slicer-X.Y/Resources`` beside ``qt-scripted-modules``). Slicer's usual
place, a ``Resources`` folder inside the module folder, is looked at too.
"""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES_ENV = "LDCTDENOISE_RESOURCES"


def resources_dirs() -> list[Path]:
    """Candidate ``Resources/`` folders in search order: env override, beside the module, inside it."""
    library = Path(__file__).resolve().parent
    candidates = []
    if os.environ.get(RESOURCES_ENV):
        candidates.append(Path(os.environ[RESOURCES_ENV]).expanduser())
    candidates += [library.parent.parent / "Resources", library.parent / "Resources"]
    return candidates


def resource_path(relative: str) -> Path:
    """The first existing ``Resources/<relative>``; the error lists every folder looked in."""
    for folder in resources_dirs():
        if (folder / relative).exists():
            return folder / relative
    looked = ", ".join(str(folder) for folder in resources_dirs())
    raise FileNotFoundError(f"Resources/{relative} not found (looked in {looked}); reinstall the extension or "
                            "add the checkout's LDCTDenoise folder to Slicer's 'Additional module paths'")
