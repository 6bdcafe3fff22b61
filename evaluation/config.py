"""The study's recipe (evaluation/study.yaml): cases with their regions, dose levels, seeds, methods."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from LDCTDenoiseLib.compare.roi import Box
from LDCTDenoiseLib.errors import InputError

STUDY_FILE = Path(__file__).with_name("study.yaml")
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CaseSpec:
    name: str
    series: str
    slices: tuple[int, int]
    held_out: bool
    regions: dict[str, Box]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str
    path: Path | None = None


@dataclass(frozen=True)
class Study:
    doses: tuple[float, ...]
    noise_seed: int
    photons_per_ray: float
    rotation_deg: float
    shift_mm: tuple[float, float, float]
    tuning_series: str
    tuning_slices: tuple[int, int]
    cases: tuple[CaseSpec, ...]
    methods: tuple[MethodSpec, ...]
    proposed: str
    register_unaligned: bool = True
    quick: bool = False

    def quick_version(self, raw_quick: dict) -> Study:
        """Two slices of one case at one dose, no registration: the CI check that the report builds."""
        case = next((c for c in self.cases if c.name == raw_quick["case"]), None)
        if case is None:
            raise InputError(f"quick.case {raw_quick['case']!r} is not among the cases")
        return replace(self, doses=tuple(raw_quick["doses"]), tuning_slices=tuple(raw_quick["tuning_slices"]),
                       cases=(replace(case, slices=tuple(raw_quick["slices"])),), register_unaligned=False,
                       quick=True)


def load_study(path: Path = STUDY_FILE, quick: bool = False) -> Study:
    raw = yaml.safe_load(Path(path).read_text())
    recipe = raw["recipe"]
    cases = tuple(CaseSpec(c["name"], c["series"], tuple(c["slices"]), bool(c["held_out"]),
                           {name: Box.from_center_size(r["center"], r["size"]) for name, r in c["regions"].items()})
                  for c in raw["cases"])
    methods = tuple(MethodSpec(m["name"], m["kind"], REPOSITORY / m["path"] if "path" in m else None)
                    for m in raw["methods"])
    if raw["proposed"] not in [m.name for m in methods]:
        raise InputError(f"proposed method {raw['proposed']!r} is not among the methods")
    study = Study(
        doses=tuple(recipe["doses"]), noise_seed=int(recipe["noise_seed"]),
        photons_per_ray=float(recipe["photons_per_ray"]), rotation_deg=float(recipe["unaligned"]["rotation_deg"]),
        shift_mm=tuple(recipe["unaligned"]["shift_mm"]), tuning_series=raw["tuning"]["series"],
        tuning_slices=tuple(raw["tuning"]["slices"]), cases=cases, methods=methods, proposed=raw["proposed"],
    )
    return study.quick_version(raw["quick"]) if quick else study
