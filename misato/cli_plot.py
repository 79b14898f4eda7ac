"""``misato plot``: figures of evaluation runs (metric vs hole ratio, per-domain bars, FID vs LPIPS), PNG + SVG."""
from __future__ import annotations

import argparse
import sys

from misato.outputs import declare_paths

KINDS = ("mask_ratio", "domain", "fid_lpips")
"""``results.plots.KINDS``, spelled out: building the parser must not import ``evaluate`` (see misato.compat)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "plot evaluation runs: each metric against hole ratio (bootstrap bands), per-domain bars, FID vs LPIPS"
    parser = subparsers.add_parser("plot", help=text, description=text + ". See docs/pictures.md.")
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                        help="folders written by `misato evaluate --out`")
    parser.add_argument("--labels", metavar="A,B,...", help="one label per run (default: the summary's method)")
    parser.add_argument("--kinds", default=",".join(KINDS), metavar="K,...",
                        help=f"figures to write (default all: {','.join(KINDS)})")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (0 = no bands)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for <kind>.png, <kind>.svg, plots.json")
    parser.add_argument("--overwrite", action="store_true", help="replace the plots of an earlier `misato plot`")
    parser.set_defaults(handler=plot_command)
    declare_paths(parser, inputs=("runs",), outputs=("out",))


def plot_command(args: argparse.Namespace) -> int:
    """Write the figures with :func:`results.plots.plot`."""
    from results.plots import plot

    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    result = plot(args.runs, args.out, labels=labels, kinds=kinds, n_boot=args.bootstrap, seed=args.seed,
                  overwrite=args.overwrite)
    for note in result["notes"]:
        print(f"misato plot: note: {note}", file=sys.stderr)
    print(f"misato plot: wrote {', '.join(str(path) for path in result['files'])}", file=sys.stderr)
    return 0
