"""``misato compare``: one table across evaluation runs, with bootstrap intervals, paired tests and paper numbers."""
from __future__ import annotations

import argparse
import sys

from misato.cli_choices import BOOTSTRAP_RANGE, SEED_RANGE, int_in
from misato.outputs import declare_paths

BY_CHOICES = ("domain", "mask_ratio")
"""``evaluate.schema.BREAKDOWNS``' names, spelled out: building the parser must not import ``evaluate`` (it may be
Hugging Face's, see :mod:`misato.compat`)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "compare evaluation run folders in one table (csv, md or tex) with uncertainty"
    parser = subparsers.add_parser("compare", help=text, description=text + ". See docs/compare.md.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `misato evaluate --out`")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file (.csv/.md/.tex), or - for stdout")
    parser.add_argument("--format", dest="fmt", choices=("csv", "md", "tex"), help="default: from FILE's suffix")
    parser.add_argument(
        "--labels", metavar="A,B,...", help="row labels, one per run (default: the summary's method, else the folder)"
    )
    parser.add_argument(
        "--reported",
        metavar="TABLE",
        help="put the paper's numbers beside matching rows (e.g. table1_misato512, places2, asuka_flux:MISATO@1K)",
    )
    parser.add_argument(
        "--by", choices=BY_CHOICES,
        help="print the per-domain or per-mask-ratio table instead (no intervals, paired tests or paper numbers)",
    )
    parser.add_argument("--bootstrap", type=int_in(*BOOTSTRAP_RANGE), metavar="B", help="bootstrap resamples (default 1000; 0 = none)")
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), help="seed of the bootstrap resamples (default 0)")
    parser.add_argument("--baseline", metavar="LABEL", help="run the paired tests compare against (default: the first)")
    parser.add_argument("--no-paired", action="store_true", help="skip paired tests (allows runs on different images)")
    parser.add_argument("--strict", action="store_true", help="refuse runs with different protocols or weight files")
    parser.set_defaults(handler=compare)
    declare_paths(parser, inputs=("run_dirs",), outputs=("out",))


def compare(args: argparse.Namespace) -> int:
    """Write the table to ``--out``, warnings and notes to stderr; with ``--out -`` the table (which carries them)
    goes to stdout and nothing is repeated on stderr."""
    from evaluate.compare import compare as compare_runs

    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    text, table = compare_runs(
        args.run_dirs,
        args.out,
        fmt=args.fmt,
        labels=labels,
        reported=args.reported,
        by=args.by,
        n_boot=args.bootstrap,
        seed=args.seed,
        baseline=args.baseline,
        strict=args.strict,
        paired=not args.no_paired,
    )
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    for warning in table.warnings:
        print(f"misato compare: warning: {warning}", file=sys.stderr)
    for note in table.notes:
        print(f"misato compare: note: {note}", file=sys.stderr)
    print(f"misato compare: wrote {args.out}", file=sys.stderr)
    return 0
