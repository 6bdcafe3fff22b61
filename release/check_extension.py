"""The extension index's checks that run offline, and what each finds: ``make check-extension``.

    python release/check_extension.py

Checked: a LICENSE at the top (the index's PR checklist asks for one); the top-level ``CMakeLists.txt``
metadata (homepage, category, contributors, description, icon and screenshot URLs, each pointing at a
file of this repository on the main branch, and that file present); the index entry
``release/LDCTDenoise.json`` against the rules of Slicer's catalog-entry schema v1.0.1 (required keys,
no others, their types and allowed values; written out here, since nothing is fetched at run time) and
consistent with ``CMakeLists.txt``; the repository under the index's 100 MB (tracked files, and the
packed history a clone downloads). Each failure says why; the exit status is 1 when any fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
RAW_PREFIX = "https://raw.githubusercontent.com/LDCTDenoise/SlicerLDCTDenoise/main/"
SIZE_LIMIT_MB = 100.0
SCHEMA_V101 = {  # Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json, as rules
    "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": ("git", "local"),
    "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": (1, 3, 5),
}
REQUIRED = ("$schema", "category", "scm_url")
METADATA = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
            "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")


def main() -> int:
    checks = [license_file(), *metadata(), *index_entry(), *repository_size()]
    for passed, text in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    failed = sum(not passed for passed, _ in checks)
    print(f"{len(checks) - failed} of {len(checks)} checks pass" + (f"; {failed} fail" if failed else ""))
    return 1 if failed else 0


def license_file() -> tuple[bool, str]:
    path = REPOSITORY / "LICENSE"
    if not path.is_file():
        return False, "LICENSE: missing at the top of the repository"
    return "Apache License" in path.read_text()[:200], "LICENSE: Apache License 2.0 text (pyproject says Apache-2.0)"


def cmake_metadata() -> dict[str, str]:
    text = (REPOSITORY / "CMakeLists.txt").read_text()
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def metadata() -> list[tuple[bool, str]]:
    found = cmake_metadata()
    results = [(bool(found.get(key)), f"CMakeLists.txt {key}: {'set' if found.get(key) else 'missing or empty'}")
               for key in METADATA]
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in found.get(key, "").split():
            if not url.startswith(RAW_PREFIX):
                results.append((False, f"{key} {url}: not a file of this repository's main branch"))
                continue
            path = REPOSITORY / url[len(RAW_PREFIX):]
            results.append((path.is_file(), f"{key}: {path.relative_to(REPOSITORY)} "
                                            f"{'exists' if path.is_file() else 'does not exist'}"))
    return results


def index_entry() -> list[tuple[bool, str]]:
    path = REPOSITORY / "release" / "LDCTDenoise.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return [(False, f"release/LDCTDenoise.json: not readable JSON ({error})")]
    results = [(key in entry, f"index entry: required key {key}") for key in REQUIRED]
    for key, value in entry.items():
        rule = SCHEMA_V101.get(key)
        if rule is None:
            results.append((False, f"index entry: {key} is not in schema v1.0.1 (additionalProperties is false)"))
        elif isinstance(rule, tuple):
            results.append((value in rule, f"index entry: {key} {value!r} must be one of {rule}"))
        else:
            results.append((isinstance(value, rule), f"index entry: {key} must be a {rule.__name__}"))
    cmake = cmake_metadata()
    results.append((entry.get("category") == cmake.get("EXTENSION_CATEGORY"),
                    "index entry: category matches CMakeLists.txt EXTENSION_CATEGORY"))
    depends = cmake.get("EXTENSION_DEPENDS", "").split()
    results.append((sorted(entry.get("build_dependencies", [])) == sorted(depends),
                    "index entry: build_dependencies match CMakeLists.txt EXTENSION_DEPENDS"))
    homepage = cmake.get("EXTENSION_HOMEPAGE", "")
    results.append((entry.get("scm_url", "").removesuffix(".git") == homepage,
                    "index entry: scm_url is the CMakeLists.txt EXTENSION_HOMEPAGE repository"))
    return results


def repository_size() -> list[tuple[bool, str]]:
    files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=REPOSITORY).stdout.split(b"\0")
    tracked = sum((REPOSITORY / name.decode()).stat().st_size for name in files
                  if name and (REPOSITORY / name.decode()).is_file()) / 1e6
    counted = subprocess.run(["git", "count-objects", "-v"], capture_output=True, text=True, cwd=REPOSITORY).stdout
    sizes = dict(line.split(": ") for line in counted.splitlines())
    packed = (int(sizes.get("size-pack", 0)) + int(sizes.get("size", 0))) * 1024 / 1e6
    heaviest = largest_folders(files)
    return [(tracked < SIZE_LIMIT_MB, f"repository: tracked files {tracked:.0f} MB (limit {SIZE_LIMIT_MB:g} MB; "
                                      f"heaviest: {heaviest})"),
            (packed < SIZE_LIMIT_MB, f"repository: git objects {packed:.0f} MB (what a clone downloads; a file "
                                     "once committed stays in history, so only a new repository or a history "
                                     "rewrite brings this down)")]


def largest_folders(files: list[bytes]) -> str:
    sizes: dict[str, int] = {}
    for name in files:
        if name and (REPOSITORY / name.decode()).is_file():
            top = "/".join(Path(name.decode()).parts[:2])
            sizes[top] = sizes.get(top, 0) + (REPOSITORY / name.decode()).stat().st_size
    return ", ".join(f"{folder} {size / 1e6:.0f} MB" for folder, size in sorted(sizes.items(), key=lambda i: -i[1])[:3])


if __name__ == "__main__":
    sys.exit(main())
