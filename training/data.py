"""Datasets of patients: which NDCT (and optional LDCT) series belong to whom, and the split.

A dataset is either a manifest (CSV with columns ``patient,ndct[,subject][,ldct][,split]``, lines
starting with ``#`` are comments, or YAML with a ``patients:`` list of the same keys; relative paths
are relative to the manifest; ``subject`` groups several series of one person) or a folder
that follows the convention: one sub-folder per patient holding ``ndct`` and optionally
``ldct`` (each a DICOM folder or a volume file such as ``ndct.nrrd``); a patient folder without
them that is itself a DICOM series is taken as NDCT only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import READ_SUFFIXES

from .config import DataConfig

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Patient:
    name: str
    ndct: Path
    ldct: Path | None = None
    split: str | None = None  # fixed by the manifest; None = drawn by split_patients
    subject: str = ""  # the person; several series (studies) of one subject share one split

    @property
    def person(self) -> str:
        return self.subject or self.name


def load_patients(source: str | Path) -> list[Patient]:
    """Patients of a manifest file or of a folder that follows the convention."""
    source = Path(source).expanduser()
    if source.is_file():
        patients = _read_manifest(source)
    elif source.is_dir():
        patients = _discover(source)
    else:
        raise InputError(f"dataset {source} does not exist; give a manifest (.csv/.yaml) or a dataset folder")
    if not patients:
        raise InputError(f"dataset {source} lists no patients; see training/README.md for the layout")
    names = [patient.name for patient in patients]
    if len(set(names)) != len(names):
        raise InputError(f"dataset {source}: patient names must be unique; got {sorted(names)}")
    splits_of: dict[str, set] = {}
    for patient in patients:
        splits_of.setdefault(patient.person, set()).add(patient.split)
    for person, splits in splits_of.items():
        if len(splits) > 1:
            raise InputError(f"dataset {source}: subject {person} has series in several splits "
                             f"({', '.join(sorted(str(s) for s in splits))}); a subject belongs to one split")
    for patient in patients:
        for path in (patient.ndct, patient.ldct):
            if path is not None and not path.exists():
                raise InputError(f"dataset {source}: patient {patient.name}: {path} does not exist")
    return patients


def dataset_split(data: DataConfig) -> dict[str, list[Patient]]:
    """The patients of ``data.dataset`` split as ``data`` says: every command that trains, packs or evaluates agrees."""
    return split_patients(load_patients(data.dataset), data.validation, data.test, data.split_seed)


def split_patients(
    patients: list[Patient], validation: float | int, test: float | int, seed: int
) -> dict[str, list[Patient]]:
    """Subject-level split: manifest-fixed splits are kept, the other subjects are shuffled with ``seed``.

    ``validation``/``test`` are counts (int) or fractions of all patients (float), as in the
    paper's 46 train / 18 test of 64.
    """
    fixed = {name: [p for p in patients if p.split == name] for name in SPLITS}
    free_people: dict[str, list[Patient]] = {}
    for patient in patients:
        if patient.split is None:
            free_people.setdefault(patient.person, []).append(patient)
    people = list(free_people.values())
    order = np.random.default_rng(seed).permutation(len(people))
    people = [people[i] for i in order]
    wanted = {"validation": _count(validation, len(patients)), "test": _count(test, len(patients))}
    result = {name: list(fixed[name]) for name in SPLITS}
    for name in ("test", "validation"):
        while len(result[name]) < wanted[name] and people:
            result[name].extend(people.pop(0))
    result["train"] += [patient for person in people for patient in person]
    if not result["train"]:
        raise InputError(f"no training patients left after the split of {len(patients)} patients")
    return result


def _count(value: float | int, total: int) -> int:
    if isinstance(value, float) and 0 <= value < 1:
        return int(round(value * total))
    if isinstance(value, int) and value >= 0:
        return value
    raise InputError(f"a split size is a count (int >= 0) or a fraction in [0, 1); got {value!r}")


def _read_manifest(path: Path) -> list[Patient]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(line for line in handle if not line.lstrip().startswith("#")))
    elif path.suffix.lower() in (".yaml", ".yml"):
        rows = (yaml.safe_load(path.read_text()) or {}).get("patients", [])
    else:
        raise InputError(f"manifest {path}: use a .csv or .yaml file")
    return [_patient_from_row(row, path, number) for number, row in enumerate(rows, start=1)]


def _patient_from_row(row: dict, manifest: Path, number: int) -> Patient:
    if not row.get("patient") or not row.get("ndct"):
        raise InputError(f"manifest {manifest}, entry {number}: 'patient' and 'ndct' are required; got {row}")
    split = (row.get("split") or "").strip() or None
    if split is not None and split not in SPLITS:
        raise InputError(f"manifest {manifest}, entry {number}: split must be one of {SPLITS}; got {split!r}")
    ldct = (row.get("ldct") or "").strip()
    return Patient(
        name=str(row["patient"]).strip(),
        ndct=(manifest.parent / str(row["ndct"]).strip()).resolve(),
        ldct=(manifest.parent / ldct).resolve() if ldct else None,
        split=split,
        subject=str(row.get("subject") or "").strip(),
    )


def _discover(root: Path) -> list[Patient]:
    patients = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ndct, ldct = _named_series(folder, "ndct"), _named_series(folder, "ldct")
        if ndct is None and any(f.suffix.lower() == ".dcm" or f.suffix == "" for f in folder.iterdir() if f.is_file()):
            ndct = folder
        if ndct is None:
            raise InputError(
                f"{folder}: no NDCT found; a patient folder holds 'ndct' (DICOM folder or volume file, "
                "e.g. ndct.nrrd) and optionally 'ldct', or is itself a DICOM series"
            )
        patients.append(Patient(folder.name, ndct, ldct))
    return patients


def _named_series(folder: Path, name: str) -> Path | None:
    if (folder / name).is_dir():
        return folder / name
    for suffix in READ_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None
