"""Comparison tables across evaluation run folders, with bootstrap intervals and paired tests.

A run folder is what ``misato evaluate --out RUN`` writes (the files and keys are defined in
:mod:`evaluate.schema`). Stages, each a pure function in its own module:

- :mod:`~evaluate.compare.loading`: :func:`load_run` / :func:`load_runs` read and validate run folders;
- :mod:`~evaluate.compare.tables`: :func:`build_comparison` / :func:`build_breakdown` make the tables (the paper's
  numbers come from :func:`results.tables.join_reported`);
- :mod:`~evaluate.compare.rendering`: :func:`render` writes ``csv``, ``md`` or ``tex``.

:func:`compare` chains them and writes the file (the CLI's ``misato compare``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from evaluate.compare.loading import Run, load_run, load_runs
from evaluate.compare.rendering import FORMATS, format_for, render
from evaluate.compare.tables import (
    CONFIDENCE,
    DEFAULT_BOOTSTRAP,
    BreakdownRow,
    BreakdownTable,
    Cell,
    ComparisonTable,
    Row,
    build_breakdown,
    build_comparison,
    comparability_warnings,
)
from misato.errors import MisatoError
from misato.io import atomic_write_text
from misato.outputs import check_output_location
from misato.resources import check_memory

__all__ = [
    "CONFIDENCE", "DEFAULT_BOOTSTRAP", "FORMATS", "BreakdownRow", "BreakdownTable", "Cell", "ComparisonTable", "Row",
    "Run", "build_breakdown", "build_comparison", "comparability_warnings", "compare", "format_for", "load_run",
    "load_runs", "render",
]


def _check_breakdown_options(
    reported: str | None, n_boot: int | None, seed: int | None, baseline: str | None, paired: bool
) -> None:
    """``--by`` tables come straight from the summaries: refuse the options that only the comparison uses."""
    given = [option for option, used in (("--reported", reported is not None), ("--bootstrap", n_boot is not None),
                                         ("--seed", seed is not None), ("--baseline", baseline is not None),
                                         ("--no-paired", not paired)) if used]
    if given:
        raise MisatoError(
            f"{', '.join(given)} cannot be combined with --by: the breakdowns are the evaluator's per-group values, "
            "with no intervals, paired tests or reported numbers (the paper reports no breakdowns)"
        )


def compare(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    fmt: str | None = None,
    labels: Sequence[str] | None = None,
    reported: str | None = None,
    by: str | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
    baseline: str | None = None,
    strict: bool = False,
    paired: bool = True,
) -> tuple[str, ComparisonTable | BreakdownTable]:
    """Load ``run_dirs``, build the comparison (or ``by`` breakdown) table, write it to ``out`` atomically.

    ``out == "-"`` writes nothing (the caller prints the text). Returns the rendered text and the table, whose
    ``warnings``/``notes`` the caller may show. ``n_boot`` defaults to :data:`DEFAULT_BOOTSTRAP` and ``seed`` to 0;
    with ``by``, giving ``reported``, ``n_boot``, ``seed``, ``baseline`` or ``paired=False`` is an error. See
    :func:`build_comparison` for the other arguments.
    """
    fmt = format_for(out, fmt)
    if str(out) != "-" and Path(out).is_dir():
        raise MisatoError(f"--out {out} is a folder; give a file name such as {Path(out) / 'comparison.md'}")
    if by is not None:
        _check_breakdown_options(reported, n_boot, seed, baseline, paired)
    if str(out) != "-":
        check_output_location(out, run_dirs)
    runs = load_runs(run_dirs, labels)
    if by is None:
        resamples = DEFAULT_BOOTSTRAP if n_boot is None else n_boot
        columns = max(len(run.per_image.columns) for run in runs)
        # peak: the float64 [B, k] resample means of one run and of a paired test's two sides (index chunks are
        # bounded by evaluate.stats, a few tens of MB)
        check_memory(3 * 8 * resamples * columns, f"--bootstrap {resamples}")
    if by is not None:
        table: ComparisonTable | BreakdownTable = build_breakdown(runs, by, strict=strict)
    else:
        table = build_comparison(
            runs,
            n_boot=DEFAULT_BOOTSTRAP if n_boot is None else n_boot,
            seed=0 if seed is None else seed,
            baseline=baseline,
            reported=reported,
            strict=strict,
            paired=paired,
        )
    text = render(table, fmt)
    if str(out) != "-":
        atomic_write_text(out, text)
    return text, table
