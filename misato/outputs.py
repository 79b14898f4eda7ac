"""The one output-folder policy of every long job (build, masks, runner, demo, assemble, evaluate).

- Outputs never are, or lie inside, an input (:func:`check_output_location`; the CLI checks every command's
  declared paths with :func:`check_command_paths`, symbolic links resolved).
- A command's output never lies inside what another job's folder owns (:func:`check_not_owned_by_job`): that
  job's ``--overwrite`` would delete it (e.g. ``misato grid --out DEMO/runs/grid`` inside a demo folder).
- A job's folder is identified by its record file (the *marker*: ``run.json``, ``build.json``, …). An empty or
  missing folder is fresh. A non-empty folder without a marker is never touched: not resumed, not overwritten.
- ``resume`` continues the job recorded there (the caller checks the record's settings and finds what is
  missing); a complete job may be resumed too, which fills in what was deleted or extends it.
- ``overwrite`` deletes only what the job writes (the policy's ``owned`` patterns), nothing else in the folder,
  and the sub-folders that this leaves empty (``image/`` once its ``NNNN.png`` files are gone).
- Without either, a folder holding a job is refused with a message saying which option continues or replaces it.
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from misato.errors import MisatoError


def check_output_location(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output (file or folder) that is one of the inputs (files or folders) or lies inside an input folder.

    Symbolic links are resolved on both sides, so a link to an input is the input. Inputs need not exist.

    Raises:
        MisatoError: naming the output and the input it would overwrite.
    """
    out = Path(out).expanduser().resolve()
    for given in inputs:
        folder = Path(given).expanduser().resolve()
        if out == folder:
            raise MisatoError(f"output {out} is the input {given} itself (inputs are never written); choose another place")
        if folder in out.parents:
            raise MisatoError(f"output {out} lies inside the input folder {folder}; choose another place")


def declare_paths(parser: argparse.ArgumentParser, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> None:
    """Record which options (argparse ``dest`` names) of a subcommand name what it reads and what it writes.

    :func:`misato.cli.main` calls :func:`check_command_paths` with them before the command runs, so no command
    writes on or inside one of its inputs. A test checks that every subcommand with an output option declares it.
    """
    parser.set_defaults(path_inputs=tuple(inputs), path_outputs=tuple(outputs))


def _given_paths(args: argparse.Namespace, dests: Iterable[str]) -> list[str]:
    """The path values of the options ``dests``: lists flattened, ``NAME=DIR`` pairs give DIR, None and ``-`` skipped."""
    found = []
    for dest in dests:
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            item = item[-1] if isinstance(item, tuple) else item
            if item is not None and str(item) != "-":
                found.append(str(item))
    return found


def check_command_paths(args: argparse.Namespace) -> None:
    """Refuse a command line whose outputs (declared with :func:`declare_paths`) land on or inside an input, or
    inside what another job's folder owns."""
    inputs = _given_paths(args, getattr(args, "path_inputs", ()))
    for out in _given_paths(args, getattr(args, "path_outputs", ())):
        check_output_location(out, inputs)
        check_not_owned_by_job(out)


@dataclass(frozen=True)
class OutputPolicy:
    """How one kind of job recognises and clears its output folder.

    Attributes:
        what: the job's name in messages (``"run"``, ``"build"``, ``"mask set"``).
        markers: record files (relative paths) identifying the job's folder, in order; a record found under
            the first is complete unless it says ``"complete": false``; under a later one (a state file of an
            unfinished job) it is unfinished unless it says ``"complete": true``.
        owned: glob patterns (relative to the folder) of everything the job writes, deleted by ``overwrite``.
        can_resume, can_overwrite: whether the job offers ``--resume`` / ``--overwrite`` (messages only mention
            options that exist).
    """

    what: str
    markers: tuple[str, ...]
    owned: tuple[str, ...]
    can_resume: bool = True
    can_overwrite: bool = True


@dataclass(frozen=True)
class PreviousOutput:
    """The job found in an output folder being resumed: its record, which marker held it, and whether the job
    was complete."""

    record: dict[str, Any]
    marker: Path
    complete: bool


TEMPORARY_FILES = "**/.*.tmp"
"""Pattern (at any depth) of the hidden temporary files atomic writes leave when killed
(:func:`misato.io.atomic_write_bytes`): ``overwrite`` and ``resume`` delete them."""


def _with_article(noun: str) -> str:
    """``noun`` after "a" or "an" (by its first letter: "an ASUKA model folder", "a run")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _through_a_link(out: Path, path: Path) -> bool:
    """Whether ``path`` (inside ``out``) is reached through a symbolic link to a folder: what lies there belongs
    to wherever the link points, not to the job in ``out``."""
    return any(folder.is_symlink() for folder in path.parents[: len(path.relative_to(out).parts) - 1])


def _owned_paths(out: Path, policy: OutputPolicy) -> list[Path]:
    """What ``policy`` owns in ``out``, deepest first; nothing behind a linked folder (``glob`` follows links)."""
    found = {path for pattern in (*policy.owned, TEMPORARY_FILES) for path in out.glob(pattern)
             if not _through_a_link(out, path)}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)  # deepest first


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record file; a damaged one is an error (never silently replaced)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MisatoError(f"{path} is damaged ({error}); move the folder aside or choose another output") from None
    if not isinstance(record, dict):
        raise MisatoError(f"{path} is not a record of this toolkit; move the folder aside or choose another output")
    return record


def prepare_output(out: str | os.PathLike, policy: OutputPolicy, *, resume: bool = False, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> PreviousOutput | None:
    """Apply the policy (module docstring) to ``out`` before a job writes there.

    Args:
        out: the output folder (need not exist).
        policy: the job's :class:`OutputPolicy`.
        resume: continue the job recorded in ``out``.
        overwrite: delete what a previous job of this kind wrote in ``out`` (only that) and start afresh.
        inputs: folders the job reads; ``out`` must not be or lie inside one.
    Returns:
        The previous job when resuming one; None when the job starts afresh (``out`` missing, empty, or cleared).
    Raises:
        MisatoError: ``out`` inside an input, not a folder, foreign content, a damaged record, both options, or
        a job already there without ``resume``/``overwrite``.
    """
    out = Path(out)
    check_output_location(out, inputs)
    if resume and overwrite:
        raise MisatoError("choose either --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise MisatoError(f"output {out} exists and is not a folder")
    owned = set(_owned_paths(out, policy)) if out.is_dir() else set()
    entries = [p for p in out.iterdir() if not p.name.startswith(".") or p in owned] if out.is_dir() else []
    if not entries:
        return None
    marker = next((out / name for name in policy.markers if (out / name).is_file()), None)
    if marker is None:
        replace = f" (--overwrite only replaces a folder {_with_article(policy.what)} wrote)" if policy.can_overwrite else ""
        raise MisatoError(f"{out} is not empty and holds no {policy.markers[0]}; choose another folder{replace}")
    record = read_record(marker)
    complete = bool(record.get("complete", marker == out / policy.markers[0]))
    if overwrite:
        for path in _owned_paths(out, policy):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            for folder in path.parents[: len(path.relative_to(out).parts) - 1]:  # between path and out
                if any(folder.iterdir()):
                    break
                folder.rmdir()  # never a link: _owned_paths left out what lies behind one
        return None
    if resume:
        for path in out.glob(TEMPORARY_FILES):  # left by a killed write; the resumed job writes them anew
            if path.is_file() and not _through_a_link(out, path):
                path.unlink(missing_ok=True)  # another rank of the same job may have removed it first
        return PreviousOutput(record, marker, complete)
    options = [option for option, offered in (("--resume to continue or complete it", policy.can_resume),
                                              ("--overwrite to replace it", policy.can_overwrite)) if offered]
    held = f"{_with_article(policy.what)} recorded as complete" if complete else f"an unfinished {policy.what}"
    advice = f"pass {' or '.join(options)}, or choose another folder" if options else "choose another folder"
    raise MisatoError(f"{out} is not empty: it holds {held}; {advice}")


JOB_POLICIES: dict[str, tuple[str, ...]] = {
    "run.json": ("baselines.runner:RUN_POLICY",),
    "build.json": ("misato.build.builder:BUILD_POLICY",),
    "masks.json": ("misato.masks.generate:MASKS_POLICY",),
    "demo.json": ("misato.cli_demo:DEMO_POLICY",),
    "assembly.json": ("asuka.assemble:ASSEMBLY_POLICY", "asuka.flux.assemble:FLUX_ASSEMBLY_POLICY"),
    "train.json": ("asuka.train.loop:record_policy",),
    "plots.json": ("results.plots:PLOT_POLICY",),
    "grid.json": ("results.grid:GRID_POLICY",),
    "study.json": ("results.study:STUDY_POLICY",),
    "tables.json": ("results.paper:TABLES_POLICY",),
}
"""Record file of each kind of job folder → where its :class:`OutputPolicy` is defined (``module:name``; a name may
be a function of the folder's record returning the policy). Imported only when such a folder encloses an output.
A test checks that every policy of the code base is listed."""


def discard_refused_start(out: Path, state: Path, made_here: bool) -> None:
    """Undo what a job wrote before it was refused on its inputs or settings, when nothing it computed is there: the
    ``state`` it wrote (a record file or a state folder) and ``out`` itself when the job made it and it is now
    empty. A later, corrected run then starts afresh instead of being told to resume."""
    if state.is_dir():
        shutil.rmtree(state, ignore_errors=True)
    else:
        state.unlink(missing_ok=True)
    if made_here and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _policies(marker: Path, references: Sequence[str]) -> list[OutputPolicy]:
    policies = []
    for reference in references:
        module, name = reference.split(":")
        try:
            found = getattr(importlib.import_module(module), name)
        except ImportError:  # that job's package is not installed here, so no command of it can overwrite
            continue
        if not isinstance(found, OutputPolicy):
            try:
                found = found(json.loads(marker.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                found = found({})
        policies.append(found)
    return policies


def within(folder: str, patterns: Sequence[str]) -> tuple[str, ...]:
    """``patterns`` of a job that writes inside ``folder`` of another (``within("runs/*", RUN_FILES)``): what the
    enclosing job's ``overwrite`` deletes there, and nothing else a user keeps beside it."""
    return tuple(f"{folder}/{pattern}" for pattern in patterns)


def _owned_region(relative: PurePosixPath, policy: OutputPolicy) -> str | None:
    """The part of the job's folder, under one of ``policy.owned``, that ``relative`` lies in, else None.

    A pattern of one part (``run.json``, ``checkpoints``) owns that path; a deeper one (``runs/*/summary.json``)
    owns its folder (``runs/*``): the job writes there, so another command's output must not. Returned is the
    literal part of the region (``runs``), as messages show it.
    """
    for pattern in policy.owned:
        parts = PurePosixPath(pattern).parts
        region = parts if len(parts) == 1 else parts[:-1]
        head = relative.parts[: len(region)]
        if len(head) == len(region) and all(map(fnmatch.fnmatchcase, head, region)):
            literal = []
            for part in region:
                if any(char in part for char in "*?["):
                    break
                literal.append(part)
            return "/".join(literal or head)
    return None


def check_not_owned_by_job(out: str | os.PathLike) -> None:
    """Refuse an output lying inside a path that an enclosing job folder owns (:data:`JOB_POLICIES`).

    A folder holding e.g. ``demo.json`` owns ``runs/``: a ``misato grid --out DEMO/runs/grid`` would be deleted by
    the next ``misato demo --overwrite``. Outputs elsewhere inside a job folder (``RUN/notes/``) are accepted.

    Raises:
        MisatoError: naming the output, the job folder, its kind and the owned path.
    """
    out = Path(out).expanduser().resolve()
    for folder in out.parents:
        for marker, references in JOB_POLICIES.items():
            if not (folder / marker).is_file():
                continue
            relative = PurePosixPath(out.relative_to(folder).as_posix())
            for policy in _policies(folder / marker, references):
                region = _owned_region(relative, policy)
                if region is not None:
                    raise MisatoError(
                        f"output {out} lies inside {folder / region}, which the {policy.what} in {folder} "
                        f"({marker}) writes into and its --overwrite clears; choose a place outside it"
                    )
