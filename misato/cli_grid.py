"""``misato grid``: images side by side (masked input, each method, ground truth), as a PNG or an HTML page."""
from __future__ import annotations

import argparse
import sys

from misato.outputs import declare_paths

DEFAULT_TILE = 256
"""``results.grid.DEFAULT_TILE``, spelled out so that building the parser imports nothing heavy."""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "draw image grids: masked input, each method's output, ground truth (PNG, or an HTML page)"
    parser = subparsers.add_parser("grid", help=text, description=text + ". See docs/pictures.md.")
    parser.add_argument("--data", required=True, help="MISATO folder (image/, mask/)")
    parser.add_argument("--runs", nargs="+", required=True, metavar="PRED_DIR",
                        help="prediction folders written by `misato inpaint --out`, one column each")
    parser.add_argument("--labels", metavar="A,B,...", help="column labels, one per run (default: the method)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--indices", metavar="I,J,...", help="positions in the sorted image names (0 = first)")
    choice.add_argument("--per-domain", type=int, metavar="K", help="K images per domain, evenly spaced")
    choice.add_argument("--worst", metavar="METRIC", help="the images where --eval's per-image METRIC is worst")
    parser.add_argument("--eval", dest="eval_run", metavar="RUN", help="evaluation run folder for --worst")
    parser.add_argument("--count", type=int, metavar="K", help="how many images --worst shows (default 8)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PX",
                        help=f"tile side in pixels (default {DEFAULT_TILE})")
    parser.add_argument("--zoom", action="store_true", help="add a zoomed crop of the hole boundary under each image")
    parser.add_argument("--out", required=True, metavar="FILE.png|DIR",
                        help="a .png file, or a folder for the HTML page (index.html, rows/, grid.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing grid")
    parser.set_defaults(handler=grid_command)
    declare_paths(parser, inputs=("data", "runs", "eval_run"), outputs=("out",))


def grid_command(args: argparse.Namespace) -> int:
    """Write the grid with :func:`results.grid.grid`."""
    from results.grid import grid, parse_indices

    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    indices = parse_indices(args.indices) if args.indices is not None else None
    result = grid(args.data, args.runs, args.out, labels=labels, indices=indices, per_domain=args.per_domain,
                  worst=args.worst, eval_run=args.eval_run, count=args.count, tile=args.tile, zoom=args.zoom,
                  overwrite=args.overwrite)
    print(f"misato grid: {len(result['rows'])} images × {len(result['columns']) - 2} methods; wrote "
          f"{', '.join(map(str, result['files']))}", file=sys.stderr)
    return 0
