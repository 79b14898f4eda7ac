"""The ``misato`` console script: one subcommand per toolkit function.

Each ``misato/cli_*.py`` module registers its subcommands with ``register(subparsers)`` and keeps heavy
imports inside its handlers, so ``misato --help`` stays fast; registering never imports ``evaluate``, which may be
Hugging Face's package of the same name. Exit codes: 0 ok, 2 bad input or usage (a
:class:`~misato.errors.MisatoError`, or Hugging Face's ``evaluate`` installed beside a subcommand that needs ours,
printed as one line without a traceback), 1 internal error.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

from misato import __version__
from misato.compat import HF_EVALUATE_MESSAGE, hf_evaluate_installed, is_evaluator_clash
from misato.distributed import leave_group
from misato.errors import MisatoError
from misato.outputs import check_command_paths

COMMAND_MODULES = (
    "misato.cli_weights",
    "misato.cli_evaluate",
    "misato.cli_fid",
    "misato.cli_compare",
    "misato.cli_demo",
    "misato.cli_masks",
    "misato.cli_build",
    "misato.cli_inpaint",
    "misato.cli_methods",
    "misato.cli_tables",
    "misato.cli_reproduce",
    "misato.cli_grid",
    "misato.cli_plot",
    "misato.cli_train",
)
EVALUATE_COMMANDS = frozenset({"evaluate", "fid", "compare", "demo", "tables", "reproduce", "plot", "grid", "train"})
"""Subcommands that import the ``evaluate`` package: refused up front when Hugging Face's is installed."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="misato",
        description="MISATO-Bench: build the benchmark, run inpainting methods, score their outputs.",
    )
    parser.add_argument("--version", action="version", version=f"misato-bench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


USER_OS_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                            errno.EISDIR, errno.ENAMETOOLONG})
"""Errors of the user's file system (full disk, no permission, a file where a folder should be, …): the command
says which path and exits 2, wherever in the code the write happened (atomic writes leave no partial file)."""


def option_flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{dest: flag}`` of subcommand ``command``'s options (and its own subcommands'), the longest spelling of
    each; messages about an option use them (:meth:`~misato.errors.MisatoError.for_flags`)."""
    flags: dict[str, str] = {}
    pending = [action.choices[command] for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.option_strings:
                flags.setdefault(action.dest, max(action.option_strings, key=len))
    return flags


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # while the subcommands' modules load: no traceback either
        print("misato: interrupted", file=sys.stderr)
        return 130
    name = " ".join(filter(None, ("misato", args.command, getattr(args, "action", None))))  # as argparse's own
    clash = f"{name}: error: {HF_EVALUATE_MESSAGE}"
    if args.command in EVALUATE_COMMANDS and hf_evaluate_installed():
        print(clash, file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # each warning as one line, like the errors
            warnings.showwarning = lambda message, *_, **__: print(f"{name}: warning: {message}", file=sys.stderr)
            check_command_paths(args)
            return int(args.handler(args) or 0)
    except MisatoError as error:
        print(f"{name}: error: {error.for_flags(option_flags(parser, args.command))}", file=sys.stderr)
        return 2
    except ImportError as error:
        if not is_evaluator_clash(error):  # a subcommand missing from EVALUATE_COMMANDS
            raise
        print(clash, file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in USER_OS_ERRORS:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"{name}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        leave_group()


if __name__ == "__main__":
    sys.exit(main())
