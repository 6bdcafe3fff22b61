"""python -m evaluation [--quick] [--out docs/evaluation] [--data ../shared/data] [--device auto]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from LDCTDenoiseLib.errors import LDCTError

from .analysis import run_study
from .config import REPOSITORY, STUDY_FILE, load_study
from .report import write_report


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
    args = parser.parse_args(argv)
    out = args.out or REPOSITORY / "docs" / ("evaluation-quick" if args.quick else "evaluation")
    start = time.perf_counter()
    try:
        study = load_study(args.study, quick=args.quick)
        result = run_study(study, args.data, args.device, say=lambda text: print(text, file=sys.stderr, flush=True))
        report = write_report(result, out, time.perf_counter() - start)
    except LDCTError as error:
        print(f"evaluation: error: {error}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
