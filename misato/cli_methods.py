"""``misato methods``: every inpainting method, what it needs, and whether it is ready on this machine."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the inpainting methods, their flags and weights, and whether each is ready here",
        description="A method is ready when its weights are found where the weights registry looks (explicit "
        "--weights files are not checked here). Methods without weight files need none, or take a --model folder.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per method instead of a table")
    parser.set_defaults(handler=methods)


def methods(args: argparse.Namespace) -> int:
    """Print :meth:`baselines.base.MethodSpec.status` for every registered method."""
    from baselines.base import method_specs

    rows = [spec.status() for spec in method_specs().values()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for row in rows:
        if row["model_folder"]:
            needs, state = "a --model folder (weights inside)", "needs --model"
        else:
            needs = ", ".join(row["weights"]) or "no weight file"
            if row["weights"] and "--weights" in row["flags"]:
                needs += " (or --weights FILE)"
            state = "ready" if row["ready"] else "weights bad" if row["problem"] else "weights missing"
        gpu = "; GPU advised" if row["gpu_advised"] else ""
        print(f"{row['method']:<14} {state:<16} needs {needs}{gpu}")
        print(f"{'':<14} {row['description']}")
        if row["flags"]:
            print(f"{'':<14} flags: {' '.join(row['flags'])}")
        if row["found"]:
            print(f"{'':<14} found: {row['found']}")
        if row["problem"]:
            print(f"{'':<14} problem: {row['problem']}")
    return 0
