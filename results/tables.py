"""Measured runs beside the paper's reported numbers (what ``misato compare --reported TABLE`` adds).

:func:`join_reported` matches run labels to the methods of a reported table (:mod:`results.reported`) and checks
that each matched run was scored on the paper's benchmark: the same number of images at the same resolution.
FID and the IDS scores move with both, so a run on another set is not comparable with the paper's row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from misato.errors import MisatoError
from results.reported import Benchmark, ReportedTable, load_reported


class MeasuredRun(Protocol):
    """What the join needs to know about a run (``evaluate.compare.Run`` is one)."""

    @property
    def label(self) -> str: ...

    @property
    def n(self) -> int: ...

    @property
    def image_sizes(self) -> tuple[tuple[int, int], ...] | None:
        """The distinct ``(height, width)`` of the run's images; None when unknown."""


@dataclass(frozen=True)
class ReportedJoin:
    """The reported values for each run label (None where no reported method matches), with the shared metrics."""

    table: ReportedTable
    metrics: tuple[str, ...]
    rows: dict[str, dict[str, float] | None]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def sizes_text(sizes: Sequence[tuple[int, int]]) -> str:
    """``(height, width)`` pairs as ``"WxH, WxH"``, sorted: how messages show a run's image sizes."""
    return ", ".join(f"{width}x{height}" for height, width in sorted(sizes))


def benchmark_mismatch(run: MeasuredRun, benchmark: Benchmark) -> tuple[list[str], list[str]]:
    """How ``run``'s image set differs from ``benchmark``: ``(differences, notes)``, both empty when it matches."""
    differences, notes = [], []
    if run.n != benchmark.images:
        differences.append(f"{run.n} images instead of {benchmark.images}")
    side = benchmark.resolution
    if run.image_sizes is None:
        notes.append(f"{run.label}: the run does not record its image size, so only N was checked against "
                     f"{benchmark.name} ({side}x{side})")
    elif set(run.image_sizes) != {(side, side)}:
        differences.append(f"images of {sizes_text(run.image_sizes)} instead of {side}x{side}")
    return differences, notes


def join_reported(name: str, runs: Sequence[MeasuredRun], metrics: Sequence[str]) -> ReportedJoin:
    """Match ``runs`` (by label, ignoring case) to the reported table ``name`` on the measured ``metrics``.

    Raises :class:`MisatoError` for an unknown table or one with no metric in ``metrics``. Warns (in the result)
    for every matched run whose image count or resolution differs from the paper's benchmark.
    """
    table = load_reported(name)
    shared = tuple(m for m in metrics if m in table.metrics)
    if not shared:
        raise MisatoError(
            f"reported table {name!r} has no metric in common with the runs "
            f"(reported: {', '.join(table.metrics)}; measured: {', '.join(metrics)})"
        )
    rows: dict[str, dict[str, float] | None] = {}
    warnings, notes = [], []
    for run in runs:
        row = table.row(run.label)
        rows[run.label] = {m: row[m] for m in shared} if row else None
        if row is None or table.benchmark is None:
            continue
        differences, run_notes = benchmark_mismatch(run, table.benchmark)
        notes.extend(run_notes)
        if differences:
            bench = table.benchmark
            warnings.append(
                f"{run.label} was scored on {' and '.join(differences)}; the paper's {name} numbers are on "
                f"{bench.name} ({bench.images} images at {bench.resolution}x{bench.resolution}), so measured and "
                "reported values are not comparable (FID and IDS depend on N and resolution)"
            )
    if not any(rows.values()):
        notes.append(
            f"no run label matches a method of {name!r} ({', '.join(table.values.index)}); set labels with --labels"
        )
    return ReportedJoin(table, shared, rows, tuple(warnings), tuple(notes))
