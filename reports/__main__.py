"""``python -m reports results/<grid> [--published CSV]``: write report.md and figures/ there."""
from __future__ import annotations

import sys

from kdcore.config import OneLineParser
# the command, not ``import reports``, loads the method registry: its colours and the published protocol's
# hyperparameters (a library user of ``reports`` passes a catalogue or goes without)
from methods import CATALOGUE

from . import NoResultsError, build_report
from .published import load_published


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m reports", description="Build report.md and figures/ for a results directory.")
    ap.add_argument("results_dir", help="a results directory (with grid.json and runs/)")
    ap.add_argument("--published", default=None,
                    help="reference CSV (teacher,student,method,top1,protocol,source); "
                         "default: the packaged CIFAR-100 table")
    args = ap.parse_args(argv)
    if args.published is not None:  # read now: a digits grid never looks at it, and a typo would pass unseen
        try:
            load_published(args.published)
        except (OSError, ValueError) as e:  # missing file, not a CSV, missing columns
            print(f"error: --published {args.published}: {e}; expected a CSV with columns "
                  f"teacher,student,method,top1[,protocol,source]", file=sys.stderr)
            return 2
    try:
        path = build_report(args.results_dir, published=args.published, catalogue=CATALOGUE)
    except NoResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
