"""``misato reproduce``: the paper's study in one command (a thin layer over :func:`results.study.reproduce`)."""
from __future__ import annotations

import argparse

from misato.outputs import declare_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run every method ready here, evaluate it with the paper's protocol and build the paper's tables",
        description="Inpaint --data with each method of the study config that is ready on this machine, evaluate "
        "each into OUT/runs/<name>, build the tables into OUT/tables, and write OUT/study.json and OUT/skipped.csv "
        "(what was skipped and why). Resumable at every level with --resume. GPU-advised methods are skipped "
        "without CUDA unless --methods names them. Exit 1 when a method failed or no table could be built. "
        "See docs/reproduce.md.",
    )
    parser.add_argument("--config", help="study file (default: the shipped results/paper.toml)")
    parser.add_argument("--data", help="MISATO folder (image/, mask/); not needed with --tables-only")
    parser.add_argument("--out", required=True, help="study folder to write (must not lie inside --data)")
    parser.add_argument("--methods", help="comma-separated entries of the config (or registered methods) to run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME.OPTION=VALUE",
                        help="set a method's option, e.g. asuka.model=/models/asuka (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the study in --out, reusing what is finished")
    parser.add_argument("--overwrite", action="store_true", help="replace the study in --out (only what it wrote)")
    parser.add_argument("--jobs", type=int, default=1, help="methods run at the same time, one process each (default 1)")
    parser.add_argument("--device", help="torch device for the methods and the evaluation (default: cuda where "
                        "available, else cpu)")
    parser.add_argument("--tables-only", action="store_true",
                        help="only build OUT/tables from the run folders in OUT/runs (e.g. made by cluster jobs)")
    parser.add_argument("--print-commands", action="store_true",
                        help="print the misato inpaint / misato evaluate command of each method (one cluster job "
                        "each) instead of running them; write nothing")
    parser.set_defaults(handler=reproduce)
    declare_paths(parser, inputs=("config", "data"), outputs=("out",))


def reproduce(args: argparse.Namespace) -> int:
    from misato.errors import MisatoError
    from results.study import STUDY_FILE, exit_code, load_config, paper_config, study_commands
    from results.study import reproduce as run_study

    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.print_commands:
        import shlex

        if args.data is None:
            raise MisatoError("--print-commands needs --data (the commands name it)")
        config = load_config(args.config or paper_config(), args.overrides)
        for _, argv in study_commands(config, args.data, args.out, methods, args.device):
            print(shlex.join(["misato", *argv]))
        return 0
    record = run_study(args.config, args.data, args.out, methods=methods, resume=args.resume,
                       overwrite=args.overwrite, jobs=args.jobs, tables_only=args.tables_only,
                       overrides=args.overrides, device=args.device)
    tables = record["tables"]
    for table, files in tables["built"].items():
        print(f"Table {table}: {', '.join(files)} in {args.out}/tables")
    for table, reason in {**tables["skipped"], **tables["failed"]}.items():
        print(f"Table {table} not built: {reason}")
    if "problem" in tables:
        print(f"No table built: {tables['problem']}")
    if not args.tables_only:
        for metric, reason in record["metrics_skipped"].items():
            print(f"Metric {metric} skipped: {reason}")
        print(f"Study record: {args.out}/{STUDY_FILE}; not done: {args.out}/skipped.csv")
    return exit_code(record)
