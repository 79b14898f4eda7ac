"""The paper's tables rebuilt from evaluation run folders (what ``misato tables`` writes).

:func:`build_tables` reads the run folders a mapping (:mod:`results.mapping`) names under ``runs_dir`` with
:func:`evaluate.compare.load_run`, builds each table in the paper's row and column order (:func:`build_table`),
and writes ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex`` per table (:mod:`results.render`) plus
``tables.json`` (what was written, from which runs, with provenance).

- A run folder that does not exist leaves its row empty, with a note — never a number.
- A run scored with another protocol, on another number of images or at another resolution than its section's
  benchmark is *flagged*: its values are shown, marked, left out of the best-value marking and of the verdict.
- ``vs_reported``: every cell also holds the reported number (``results/reported``) and measured − reported; the
  verdict counts the cells within the per-metric tolerance (:data:`results.mapping.TOLERANCES`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from evaluate import schema
from evaluate.compare import build_breakdown, load_run
from evaluate.compare.loading import Run
from evaluate.compare.tables import best_labels, group_order
from evaluate.metric_info import METRICS
from misato.errors import MisatoError
from misato.io import atomic_write_text
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance
from results.mapping import (
    ALL_TABLES,
    TABLE_NAMES,
    TOLERANCES,
    SectionSpec,
    TableMapping,
    load_mapping,
    parse_table_names,
    shipped_mapping,
)
from results.render import DECIMALS, FORMATS, render
from results.reported import load_reported
from results.tables import benchmark_mismatch

__all__ = [
    "ALL_TABLES", "DECIMALS", "TABLES_FILE", "TABLE_NAMES", "TOLERANCES", "Cell", "PaperTable", "TableResult",
    "TableRow", "TableSection", "TablesReport", "build_table", "build_tables",
]

TABLES_FILE = "tables.json"
TABLES_POLICY = OutputPolicy(what="tables folder", markers=(TABLES_FILE,), can_resume=False, can_overwrite=False,
                             owned=(*(f"*.{fmt}" for fmt in FORMATS), TABLES_FILE))
"""A tables folder is refreshed in place (tables are cheap and deterministic); a folder holding anything else is
refused."""


@dataclass(frozen=True)
class Cell:
    """One row × metric entry. ``value`` None: no measurement (missing run or metric). ``flagged``: the run was
    measured on another protocol / N / resolution than the table's. ``reported`` only with ``vs_reported``."""

    value: float | None
    reported: float | None = None
    best: bool = False
    flagged: bool = False

    @property
    def delta(self) -> float | None:
        """measured − reported, or None when either is missing."""
        return None if self.value is None or self.reported is None else self.value - self.reported

    def within(self, tolerance: float) -> bool | None:
        """Whether ``|delta| <= tolerance`` (None when there is no delta or the cell is flagged)."""
        if self.delta is None or self.flagged:
            return None
        return abs(self.delta) <= tolerance + 1e-12


@dataclass(frozen=True)
class TableRow:
    """One method in one section: the run folder it came from (relative to ``runs_dir``; ``found`` False: there
    is none), its N and protocol, cells by metric, why it is flagged (empty: not flagged), and its notes."""

    label: str
    run: str
    found: bool
    n: int | None
    protocol: str | None
    cells: dict[str, Cell]
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSection:
    """A block of rows on one image set (a breakdown table has one section per domain or hole-ratio bin)."""

    title: str
    metrics: tuple[str, ...]
    rows: tuple[TableRow, ...]
    reported: str | None = None
    reported_source: str | None = None


@dataclass(frozen=True)
class PaperTable:
    """A built table: sections in order; ``breakdown`` is ``"domain"``/``"mask_ratio"`` for breakdown tables."""

    name: str
    stem: str
    title: str
    breakdown: str | None
    sections: tuple[TableSection, ...]
    vs_reported: bool
    tolerance: dict[str, float]
    notes: tuple[str, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric of any section, in first-seen order."""
        return tuple(dict.fromkeys(m for section in self.sections for m in section.metrics))

    @property
    def verdict(self) -> str | None:
        """One line: how many measured cells with a reported value agree within tolerance (None without
        ``vs_reported`` or without reported values)."""
        if not self.vs_reported:
            return None
        within, outside, unmeasured, flagged = 0, [], 0, 0
        for section in self.sections:
            for row in section.rows:
                for metric in section.metrics:
                    cell = row.cells[metric]
                    if cell.reported is None:
                        continue
                    agrees = cell.within(self.tolerance[metric])
                    if cell.value is None:
                        unmeasured += 1
                    elif agrees is None:
                        flagged += 1
                    elif agrees:
                        within += 1
                    else:
                        where = f" ({section.title})" if len(self.sections) > 1 else ""
                        outside.append(f"{row.label}{where} {METRICS[metric].label} {cell.delta:+.{DECIMALS}f}")
        total = within + len(outside) + unmeasured + flagged
        if total == 0:
            return None
        text = f"{self.title}: {within} of {within + len(outside)} compared cells within tolerance"
        if outside:
            text += f"; outside: {', '.join(outside)}"
        skipped = [f"{count} {why}" for count, why in ((unmeasured, "without a measured value"),
                                                         (flagged, "flagged")) if count]
        if skipped:
            text += f"; not compared: {', '.join(skipped)} (of {total} reported cells)"
        return text


@dataclass(frozen=True)
class TableResult:
    """What :func:`build_tables` wrote for one table: files, notes (missing/flagged runs) and the verdict."""

    name: str
    title: str
    files: tuple[Path, ...]
    notes: tuple[str, ...]
    verdict: str | None


@dataclass(frozen=True)
class TablesReport:
    """Everything one :func:`build_tables` call did; ``skipped`` maps a table name to why it was not written."""

    out_dir: Path
    tables: tuple[TableResult, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(f for table in self.tables for f in table.files)


class _RunCache:
    """Run folders under ``runs_dir`` loaded once each (the ASUKA run serves five tables)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._runs: dict[str, Run | None] = {}

    def get(self, relative: str) -> Run | None:
        """The run at ``runs_dir / relative``; None when no such folder exists (any other problem is an error)."""
        if relative not in self._runs:
            path = self.runs_dir / relative
            self._runs[relative] = load_run(path) if path.exists() else None
        return self._runs[relative]

    @property
    def loaded(self) -> dict[str, Run]:
        return {relative: run for relative, run in self._runs.items() if run is not None}


def _flags(run: Run, section: SectionSpec) -> tuple[list[str], list[str]]:
    """How ``run`` differs from what ``section`` was measured with: ``(flags, notes)``."""
    flags, notes = benchmark_mismatch(run, section.benchmark)
    if run.protocol != section.protocol:
        flags.insert(0, f"protocol {run.protocol!r} instead of {section.protocol!r}")
    return flags, notes


def _flag_note(label: str, flags: Sequence[str], section: SectionSpec) -> list[str]:
    if not flags:
        return []
    bench = section.benchmark
    return [f"{label}: scored with {' and '.join(flags)}; the table is {bench.name} ({bench.images} images at "
            f"{bench.resolution}x{bench.resolution}, protocol {section.protocol}), so its cells are flagged (†) and "
            "not compared"]


def _lacking_notes(rows_by_group: dict[str, Sequence[TableRow]], where: str) -> list[str]:
    """One note per found run with empty cells: which metrics its ``summary.json`` (at ``where``) lacks, and for
    a breakdown (``where`` not empty) in which groups."""
    lacking: dict[tuple[str, str], dict[str, list[str]]] = {}
    for group, rows in rows_by_group.items():
        for row in (r for r in rows if r.found):
            for metric in (m for m, cell in row.cells.items() if cell.value is None):
                lacking.setdefault((row.label, row.run), {}).setdefault(metric, []).append(group)
    notes = []
    for (label, run), metrics in lacking.items():
        if where:
            missing = "; no ".join(f"{METRICS[m].label} for {', '.join(groups)}" for m, groups in metrics.items())
        else:
            missing = ", ".join(METRICS[m].label for m in metrics)
        notes.append(f"{label}: {run}/{schema.SUMMARY_JSON}{where} has no {missing}; cell(s) left empty")
    return notes


def _reported_rows(section: SectionSpec, vs_reported: bool) -> tuple[dict[str, dict[str, float] | None], str | None,
                                                                      list[str]]:
    """``{label: {metric: reported}}`` of the section's rows (None: no such method), the source line, notes."""
    if not vs_reported or section.reported is None:
        return {row.label: None for row in section.rows}, None, []
    table = load_reported(section.reported)
    rows, notes = {}, []
    for row in section.rows:
        values = table.row(row.reported_method)
        rows[row.label] = None if values is None else {m: values[m] for m in section.metrics if m in values}
        if values is None:
            notes.append(f"{row.label}: reported table {section.reported} has no method {row.reported_method!r}")
    protocol = table.source.protocol or "no protocol"
    return rows, f"{section.reported}: {table.source.source} (protocol {protocol})", notes


def _mark_best(rows: list[TableRow], metrics: Sequence[str]) -> tuple[TableRow, ...]:
    """Rows with ``best`` set on the best unflagged measured value of each column (ties at the printed precision
    all best; nothing is best with fewer than two values)."""
    best = {
        metric: best_labels({row.label: row.cells[metric].value for row in rows
                              if row.cells[metric].value is not None and not row.cells[metric].flagged},
                             metric, DECIMALS)
        for metric in metrics
    }
    return tuple(replace(row, cells={m: replace(c, best=row.label in best[m]) for m, c in row.cells.items()})
                 for row in rows)


def _section_rows(section: SectionSpec, runs: _RunCache, values_of,
                  reported: dict[str, dict[str, float] | None]) -> list[TableRow]:
    """The rows of one section; ``values_of(relative, run)`` gives ``(n, {metric: value})`` of a loaded run."""
    rows = []
    for spec in section.rows:
        run = runs.get(spec.run)
        paper = reported[spec.label] or {}
        if run is None:
            cells = {m: Cell(None, paper.get(m)) for m in section.metrics}
            note = f"{spec.label}: no run folder {spec.run!r} in the runs folder; row left empty"
            rows.append(TableRow(spec.label, spec.run, False, None, None, cells, (), (note,)))
            continue
        flags, size_notes = _flags(run, section)
        n, values = values_of(spec.run, run)
        cells = {m: Cell(values.get(m), paper.get(m), flagged=bool(flags) and m in values) for m in section.metrics}
        row_notes = size_notes + _flag_note(spec.label, flags, section)
        rows.append(TableRow(spec.label, spec.run, True, n, run.protocol, cells, tuple(flags), tuple(row_notes)))
    return rows


def _paper_table(mapping: TableMapping, runs: _RunCache, vs_reported: bool) -> PaperTable:
    sections, notes = [], []
    for section in mapping.sections:
        reported, source, reported_notes = _reported_rows(section, vs_reported)
        rows = _section_rows(section, runs, lambda _, run: (run.n, {m: float(v) for m, v in run.metrics.items()}),
                             reported)
        notes += reported_notes + [note for row in rows for note in row.notes]
        notes += _lacking_notes({section.title: rows}, "")
        sections.append(TableSection(section.title, section.metrics, _mark_best(rows, section.metrics),
                                     section.reported if vs_reported else None, source))
    return PaperTable(mapping.name, mapping.stem, mapping.title, None, tuple(sections), vs_reported,
                      mapping.tolerance, tuple(dict.fromkeys(notes)))


def _breakdown_table(mapping: TableMapping, runs: _RunCache) -> PaperTable:
    """One section per domain / hole-ratio bin; each run's groups come from its own ``summary.json`` breakdown."""
    (section,) = mapping.sections
    by = mapping.breakdown
    groups_of: dict[str, dict[str, tuple[int | None, dict[str, float]]]] = {}
    for spec in section.rows:
        run = runs.get(spec.run)
        if run is not None:
            table = build_breakdown([run], by, decimals=DECIMALS)
            groups_of[spec.run] = {row.group: (row.n, row.values) for row in table.rows}
    groups = group_order(by, (g for groups in groups_of.values() for g in groups))
    no_reported = {row.label: None for row in section.rows}
    sections, notes = [], []
    for group in groups:
        def values_of(relative: str, _: Run, group: str = group) -> tuple[int | None, dict[str, float]]:
            return groups_of[relative].get(group, (None, {}))

        rows = _section_rows(section, runs, values_of, no_reported)
        notes += [note for row in rows for note in row.notes]
        sections.append(TableSection(group, section.metrics, _mark_best(rows, section.metrics)))
    notes += _lacking_notes({s.title: s.rows for s in sections}, f" {schema.BREAKDOWNS[by]}")
    return PaperTable(mapping.name, mapping.stem, mapping.title, by, tuple(sections), False, mapping.tolerance,
                      tuple(dict.fromkeys(notes)))


def build_table(mapping: TableMapping, runs_dir: str | Path, vs_reported: bool = False, *,
                cache: _RunCache | None = None) -> PaperTable:
    """Build the table ``mapping`` describes from the run folders under ``runs_dir`` (nothing is written).

    ``cache`` (internal) shares loaded runs between the tables of one :func:`build_tables` call.

    Raises :class:`MisatoError` when a named folder exists but is not a finished evaluation run.
    """
    runs = cache or _RunCache(Path(runs_dir))
    if mapping.breakdown is not None:
        return _breakdown_table(mapping, runs)
    return _paper_table(mapping, runs, vs_reported)


def _mappings(tables: Sequence[str] | str | None, mapping: str | Path | None) -> tuple[list[TableMapping], bool]:
    """The mappings to build and whether the caller named them (then a table without any run is an error)."""
    if mapping is not None:
        if tables is not None:
            raise MisatoError("--table and --mapping exclude each other: a mapping file is one table")
        return [load_mapping(mapping)], True
    requested = tables.split(",") if isinstance(tables, str) else list(tables or [ALL_TABLES])
    named = ALL_TABLES not in [name.strip() for name in requested]
    return [shipped_mapping(name) for name in parse_table_names(tables)], named


def build_tables(
    runs_dir: Path,
    out_dir: Path,
    tables: Sequence[str] | None = None,
    vs_reported: bool = False,
    mapping: Path | None = None,
) -> TablesReport:
    """Build paper tables from the run folders under ``runs_dir`` and write them into ``out_dir``.

    Args:
        runs_dir: folder holding evaluation run folders (``misato evaluate --out``), named as the mappings say
            (by default the ``misato inpaint --method`` name; see ``docs/tables.md``).
        out_dir: where ``<stem>.csv``, ``.md``, ``.tex`` and ``tables.json`` go (created; an existing tables
            folder is refreshed, any other non-empty folder refused).
        tables: names from :data:`TABLE_NAMES` (``"all"`` or None: all). Tables none of whose runs exist are
            skipped (listed in the report) unless named explicitly, which makes that an error.
        vs_reported: add the reported value and measured − reported per cell, and a verdict line per table.
        mapping: a mapping file of your own instead of the shipped ones (excludes ``tables``).
    Returns:
        A :class:`TablesReport`: the tables and files written, notes on missing and flagged runs, verdicts.
    Raises:
        MisatoError: unknown table, bad mapping, a named folder that is not an evaluation run, no run at all.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise MisatoError(f"--runs {runs_dir}: no such folder")
    mappings, named = _mappings(tables, mapping)
    runs = _RunCache(runs_dir)
    built, skipped = [], {}
    for table_mapping in mappings:
        table_mapping = table_mapping.with_runs_in(runs_dir)
        if not table_mapping.has_runs_in(runs_dir):
            reason = f"none of its runs exist under {runs_dir} (looked for {', '.join(table_mapping.run_folders)})"
            if named:
                raise MisatoError(f"table {table_mapping.name} ({table_mapping.source}): {reason}")
            skipped[table_mapping.name] = reason
            continue
        built.append(build_table(table_mapping, runs_dir, vs_reported, cache=runs))
    if not built:
        raise MisatoError(f"no paper table has a run under --runs {runs_dir}: {_not_runs_hint(runs_dir)}")
    if out_dir.resolve() == runs_dir.resolve():
        raise MisatoError(f"--out {out_dir} is the --runs folder; write the tables elsewhere (e.g. "
                          f"{runs_dir.parent / 'tables'})")
    previous = prepare_output(out_dir, TABLES_POLICY, resume=True,
                              inputs=[run.path for run in runs.loaded.values()])
    return _write(out_dir, built, skipped, previous.record if previous else {})


def _not_runs_hint(runs_dir: Path) -> str:
    """What to do when no table found a run under ``runs_dir``: what the folder holds instead, if recognisable."""
    from baselines.runner import RUN_FILE

    if (runs_dir / schema.SUMMARY_JSON).is_file():
        return f"it is itself one evaluation run; pass the folder holding it (--runs {runs_dir.parent})"
    if (runs_dir / RUN_FILE).is_file() or any((folder / RUN_FILE).is_file() for folder in runs_dir.iterdir()):
        return ("it holds `misato inpaint` predictions (run.json), not evaluations: evaluate them with "
                "`misato evaluate --out RUNS_DIR/<method>` first")
    return "name run folders as docs/tables.md says (e.g. lama, asuka, places2/lama) or pass --mapping"


def _write(out_dir: Path, built: Sequence[PaperTable], skipped: dict[str, str], record: dict) -> TablesReport:
    """Write every table's files, then ``tables.json`` (``record``, the previous one, keeps the tables not
    rebuilt now)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = dict(record.get("tables", {}))
    if not (out_dir / TABLES_FILE).is_file():  # the marker first: a folder killed mid-way is refreshed next time
        atomic_write_text(out_dir / TABLES_FILE, json.dumps({"tables": entries}, indent=2) + "\n")
    results = []
    for table in built:
        files = []
        for fmt in FORMATS:
            file = out_dir / f"{table.stem}.{fmt}"
            atomic_write_text(file, render(table, fmt))
            files.append(file)
        used = sorted({row.run for section in table.sections for row in section.rows if row.found})
        entries[table.name] = {"title": table.title, "files": [f.name for f in files], "vs_reported": table.vs_reported,
                               "runs": used, "verdict": table.verdict, "notes": list(table.notes)}
        results.append(TableResult(table.name, table.title, tuple(files), table.notes, table.verdict))
    record = {"tables": {name: entries[name] for name in sorted(entries)}, "provenance": provenance(("pandas",))}
    atomic_write_text(out_dir / TABLES_FILE, json.dumps(record, indent=2) + "\n")
    return TablesReport(out_dir, tuple(results), skipped)
