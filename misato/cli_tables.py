"""``misato tables``: the paper's tables (CSV, Markdown, LaTeX) rebuilt from evaluation run folders."""
from __future__ import annotations

import argparse
import sys

from misato.outputs import declare_paths

TABLE_CHOICES = "1|2|3|4|places2|flux|clip|domain|mask_ratio|all"
"""``results.mapping.TABLE_NAMES`` spelled out: building the parser must not import ``evaluate`` (it may be
Hugging Face's, see :mod:`misato.compat`)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "rebuild the paper's tables from evaluation run folders (csv, md, tex), optionally against the paper"
    parser = subparsers.add_parser("tables", help=text, description=text + ". See docs/tables.md.")
    parser.add_argument("--runs", required=True, metavar="RUNS_DIR",
                        help="folder of `misato evaluate --out` run folders named as docs/tables.md says (lama, "
                             "asuka, places2/lama, misato1k/asuka-flux, ...)")
    parser.add_argument("--out", required=True, metavar="OUT", help="folder for <table>.csv/.md/.tex and tables.json")
    parser.add_argument("--table", metavar="NAME[,NAME]", help=f"{TABLE_CHOICES} (default all)")
    parser.add_argument("--mapping", metavar="FILE", help="your own mapping file (TOML) instead of --table")
    parser.add_argument("--vs-reported", action="store_true",
                        help="add the reported value and measured - reported per cell, and a verdict per table")
    parser.set_defaults(handler=tables)
    declare_paths(parser, inputs=("runs", "mapping"), outputs=("out",))


def tables(args: argparse.Namespace) -> int:
    """Write the tables; print each table's verdict and notes, and the tables skipped, on stderr."""
    from results.paper import build_tables

    report = build_tables(args.runs, args.out, tables=args.table, vs_reported=args.vs_reported, mapping=args.mapping)
    for name, reason in report.skipped.items():
        print(f"misato tables: skipped table {name}: {reason}", file=sys.stderr)
    for table in report.tables:
        for note in table.notes:
            print(f"misato tables: note: table {table.name}: {note}", file=sys.stderr)
        if table.verdict:
            print(f"misato tables: verdict: {table.verdict}", file=sys.stderr)
        print(f"misato tables: wrote {', '.join(str(f) for f in table.files)}", file=sys.stderr)
    return 0
