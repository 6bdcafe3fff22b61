"""python -m evaluation [--quick] [--only study|sweep] [--models A,B] [--out docs/evaluation] [--data ../shared/data]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from LDCTDenoiseLib.errors import LDCTError

from .analysis import run_study
from .config import REPOSITORY, STUDY_FILE, load_study
from .report import write_report
from .sweep import load_sweep, run_sweep
from .sweep_report import write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description="Build the evaluation report.")
    parser.add_argument("--quick", action="store_true", help="two slices, one dose: checks the report builds (CI)")
    parser.add_argument("--out", type=Path,
                        help="report folder (default docs/evaluation; quick: docs/evaluation-quick)")
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data",
                        help="folder holding the CT series named in the study (default ../shared/data)")
    parser.add_argument("--study", type=Path, default=STUDY_FILE,
                        help="the study's YAML (default evaluation/study.yaml)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", choices=("study", "sweep"),
                        help="build one part: the paper's comparisons (study) or the robustness sweep (OUT/sweep)")
    parser.add_argument("--models", help="the sweep with only these of its models (comma-separated names)")
    args = parser.parse_args(argv)
    out = args.out or REPOSITORY / "docs" / ("evaluation-quick" if args.quick else "evaluation")
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.only in (None, "study"):
            start = time.perf_counter()
            result = run_study(load_study(args.study, quick=args.quick), args.data, args.device, say=say)
            print(write_report(result, out, time.perf_counter() - start))
        if args.only in (None, "sweep"):
            start = time.perf_counter()
            sweep = load_sweep(args.study, quick=args.quick)
            models = [name.strip() for name in args.models.split(",")] if args.models else None
            swept = run_sweep(sweep.only(models) if models else sweep, args.data, args.device, say=say)
            print(write_sweep_report(swept, out / "sweep", time.perf_counter() - start, args.quick, models))
    except LDCTError as error:
        print(f"evaluation: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
