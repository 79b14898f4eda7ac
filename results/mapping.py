"""Mapping files: which evaluation run is which row of a paper table (``results/mappings/<table>.toml``).

A mapping is a TOML file (format in ``docs/tables.md``)::

    title = "Table 1: MISATO@512"
    protocol = "asuka"                       # the evaluate.protocols name the table was measured with
    metrics = ["psnr", "ssim", "lpips", "fid", "uids", "pids"]   # columns, in the paper's order

    [[sections]]                             # one block of rows measured on one benchmark
    benchmark = "MISATO@512"                 # a results/reported/benchmarks.csv row: N and resolution
    reported = "table1_misato512"            # the results.reported table these rows join with (optional)
    rows = [ { label = "Co-Mod", run = "comod" }, { label = "ASUKA", run = "asuka" } ]

``protocol``, ``metrics``, ``benchmark``, ``n``, ``resolution`` and ``reported`` may be given at the top (the
default of every section) or per section; ``n`` and ``resolution`` replace a benchmark for an image set of your
own. A row's ``run`` is the run folder relative to ``--runs``; its ``reported`` names the method in the reported
table when it differs from ``label``. ``breakdown = "domain"`` / ``"mask_ratio"`` makes a breakdown table (one
section, no reported numbers: the paper reports none); with ``other_runs = true`` it also gets a row for every
other evaluation run directly under ``--runs`` (label = folder name, sorted), so a user's own methods appear in
it. ``[tolerance]`` overrides :data:`TOLERANCES` per metric.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluate import schema
from evaluate.metric_info import METRICS
from evaluate.protocols import PROTOCOLS
from misato.errors import MisatoError
from results.reported import Benchmark, load_benchmarks, load_reported

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TABLE_FILES: dict[str, str] = {
    "1": "table1",
    "2": "table2",
    "3": "table3",
    "4": "table4",
    "places2": "places2",
    "flux": "flux",
    "clip": "clip",
    "domain": "domain",
    "mask_ratio": "mask_ratio",
}
"""Table name (``misato tables --table``) → the stem of its shipped mapping and of the files written for it."""
TABLE_NAMES: tuple[str, ...] = tuple(TABLE_FILES)
"""Every table ``misato tables`` builds, in the paper's order; ``all`` stands for all of them."""
ALL_TABLES = "all"

TOLERANCES: dict[str, float] = {
    "psnr": 0.1,
    "ssim": 0.005,
    "lpips": 0.005,
    "fid": 0.5,
    "uids": 0.02,
    "pids": 0.02,
    "grad": 1.0,
    "clip": 0.005,
    "kid": 0.001,
}
"""Largest ``|measured - reported|`` counted as agreeing, per metric (absolute, in the metric's unit): a few units
of the paper's last printed digit for the per-image means, more for the image-set scores, which move with the
sampling seed of a generative method (FID by several tenths at N = 2,000). Docs: ``docs/tables.md``."""

_TOP_KEYS = {"title", "protocol", "metrics", "benchmark", "n", "resolution", "reported", "breakdown", "tolerance",
             "sections", "other_runs"}
_SECTION_KEYS = {"title", "protocol", "metrics", "benchmark", "n", "resolution", "reported", "rows"}
_INHERITED = ("protocol", "metrics", "reported")
_IMAGE_SET_KEYS = {"benchmark", "n", "resolution"}
_ROW_KEYS = {"label", "run", "reported"}


@dataclass(frozen=True)
class RowSpec:
    """One table row: its printed ``label``, the run folder ``run`` (relative to ``--runs``), and the method name
    in the reported table (``reported_method``)."""

    label: str
    run: str
    reported_method: str


@dataclass(frozen=True)
class SectionSpec:
    """Rows measured on one image set: ``benchmark`` gives the N and resolution a run must have, ``protocol`` the
    evaluation protocol; ``reported`` is a :func:`results.reported.load_reported` name or None."""

    title: str
    benchmark: Benchmark
    protocol: str
    metrics: tuple[str, ...]
    reported: str | None
    rows: tuple[RowSpec, ...]


@dataclass(frozen=True)
class TableMapping:
    """A whole table: sections stacked in order, files named ``<stem>.csv/.md/.tex``."""

    name: str
    stem: str
    title: str
    source: str
    breakdown: str | None
    sections: tuple[SectionSpec, ...]
    tolerance: dict[str, float] = field(default_factory=dict)
    other_runs: bool = False

    @property
    def run_folders(self) -> tuple[str, ...]:
        """Every run folder the table reads (relative to ``--runs``), once each, in row order."""
        return tuple(dict.fromkeys(row.run for section in self.sections for row in section.rows))

    def has_runs_in(self, runs_dir: Path) -> bool:
        """Whether at least one of :attr:`run_folders` exists under ``runs_dir`` (else the table has no row to fill)."""
        return any((runs_dir / folder).exists() for folder in self.run_folders)

    def with_runs_in(self, runs_dir: Path) -> "TableMapping":
        """This mapping with, when ``other_runs`` is set, a row appended for every finished evaluation run directly
        under ``runs_dir`` that no row names (sorted by folder name; label = folder name)."""
        if not self.other_runs or not runs_dir.is_dir():
            return self
        named = set(self.run_folders)
        labels = {row.label for section in self.sections for row in section.rows}
        extra = tuple(RowSpec(path.name, path.name, path.name) for path in sorted(runs_dir.iterdir())
                      if path.name not in named and path.name not in labels
                      and (path / schema.SUMMARY_JSON).is_file())
        if not extra:
            return self
        (section,) = self.sections
        return replace(self, sections=(replace(section, rows=section.rows + extra),))


def parse_table_names(tables: str | Sequence[str] | None) -> list[str]:
    """``None``/``"all"`` → every table; ``"1,flux"`` or ``["1", "flux"]`` → those names, checked, in the given order.

    Raises :class:`MisatoError` for an unknown name.
    """
    if tables is None:
        return list(TABLE_NAMES)
    names = [t.strip() for t in (tables.split(",") if isinstance(tables, str) else tables) if t.strip()]
    if ALL_TABLES in names:
        return list(TABLE_NAMES)
    unknown = [name for name in names if name not in TABLE_FILES]
    if unknown or not names:
        raise MisatoError(f"--table: unknown table {', '.join(map(repr, unknown or names))}; choose from "
                          f"{', '.join(TABLE_NAMES)} or {ALL_TABLES}")
    return list(dict.fromkeys(names))


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MisatoError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MisatoError(f"{where} must be a positive integer, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise MisatoError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _benchmark(spec: Mapping[str, Any], where: str) -> Benchmark:
    """The section's image set: a named benchmark, optionally with ``n``/``resolution`` replaced, or both given."""
    named = spec.get("benchmark")
    if named is not None:
        benchmarks = load_benchmarks()
        if named not in benchmarks:
            raise MisatoError(f"{where}: unknown benchmark {named!r}; choose from {', '.join(benchmarks)} or give "
                              "n and resolution")
        base = benchmarks[named]
    elif "n" in spec and "resolution" in spec:
        base = None
    else:
        raise MisatoError(f"{where}: give a benchmark ({', '.join(load_benchmarks())}) or both n and resolution")
    n = _count(spec["n"], f"{where}: n") if "n" in spec else base.images
    side = _count(spec["resolution"], f"{where}: resolution") if "resolution" in spec else base.resolution
    if base is not None and (n, side) == (base.images, base.resolution):
        return base
    return Benchmark(f"{n} images at {side}x{side}" if base is None else f"{base.name} ({n} at {side})", n, side)


def _metrics(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise MisatoError(f"{where}: metrics must be a non-empty list of metric names, got {value!r}")
    unknown = [m for m in value if m not in METRICS]
    if unknown or len(set(value)) != len(value):
        problem = f"unknown metric(s) {', '.join(unknown)}" if unknown else "a metric is listed twice"
        raise MisatoError(f"{where}: {problem}; choose from {', '.join(METRICS)}")
    return tuple(value)


def _rows(value: Any, where: str) -> tuple[RowSpec, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise MisatoError(f"{where}: rows must be a non-empty list of {{ label = ..., run = ... }} tables")
    rows = []
    for i, row in enumerate(value, 1):
        at = f"{where}, row {i}"
        _check_keys(row, _ROW_KEYS, at)
        label = _text(row.get("label"), f"{at}: label")
        run = _text(row.get("run"), f"{at}: run")
        if Path(run).is_absolute() or ".." in Path(run).parts:
            raise MisatoError(f"{at}: run {run!r} must be a folder inside --runs (a relative path without '..')")
        rows.append(RowSpec(label, run, _text(row.get("reported", label), f"{at}: reported")))
    labels = [row.label for row in rows]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise MisatoError(f"{where}: the label(s) {', '.join(map(repr, twice))} appear on several rows")
    return tuple(rows)


def _section(spec: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> SectionSpec:
    _check_keys(spec, _SECTION_KEYS, where)
    merged = {**{k: defaults[k] for k in _INHERITED if k in defaults}, **spec}
    image_set = spec if _IMAGE_SET_KEYS & set(spec) else defaults  # benchmark, n and resolution go together
    benchmark = _benchmark({k: image_set[k] for k in _IMAGE_SET_KEYS if k in image_set}, where)
    protocol = _text(merged.get("protocol"), f"{where}: protocol")
    if protocol not in PROTOCOLS:
        raise MisatoError(f"{where}: unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    metrics = _metrics(merged.get("metrics"), where)
    reported = merged.get("reported")
    if reported is not None:
        try:
            reported_metrics = load_reported(_text(reported, f"{where}: reported")).metrics
        except MisatoError as error:
            raise MisatoError(f"{where}: {error}") from None
        if not set(metrics) & set(reported_metrics):
            raise MisatoError(f"{where}: reported table {reported!r} has none of the metrics {', '.join(metrics)}")
    title = _text(spec.get("title", benchmark.name), f"{where}: title")
    return SectionSpec(title, benchmark, protocol, metrics, reported, _rows(spec.get("rows"), where))


def parse_mapping(data: Mapping[str, Any], source: str, name: str, stem: str) -> TableMapping:
    """A :class:`TableMapping` from parsed TOML ``data``; errors name ``source`` (the file) and the key."""
    where = f"mapping {source}"
    _check_keys(data, _TOP_KEYS, where)
    title = _text(data.get("title"), f"{where}: title")
    breakdown = data.get("breakdown")
    if breakdown is not None and breakdown not in schema.BREAKDOWNS:
        raise MisatoError(f"{where}: breakdown must be one of {', '.join(schema.BREAKDOWNS)}, got {breakdown!r}")
    sections = data.get("sections")
    if not isinstance(sections, list) or not sections or not all(isinstance(s, dict) for s in sections):
        raise MisatoError(f"{where}: needs at least one [[sections]] table with rows")
    parsed = tuple(_section(s, data, f"{where}, section {i}") for i, s in enumerate(sections, 1))
    if len({section.metrics for section in parsed}) > 1:
        raise MisatoError(f"{where}: every section must have the same metrics (they share the table's columns)")
    if breakdown is not None and (len(parsed) > 1 or parsed[0].reported):
        raise MisatoError(f"{where}: a breakdown table has one section and no reported table (the paper reports no "
                          "breakdowns)")
    other_runs = data.get("other_runs", False)
    if not isinstance(other_runs, bool) or (other_runs and breakdown is None):
        raise MisatoError(f"{where}: other_runs must be true or false, and only a breakdown table may set it")
    tolerance = data.get("tolerance", {})
    if not isinstance(tolerance, dict):
        raise MisatoError(f"{where}: [tolerance] must be a table of metric = number")
    for metric, value in tolerance.items():
        if metric not in METRICS or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise MisatoError(f"{where}: tolerance {metric} = {value!r}; give a known metric and a number >= 0")
    return TableMapping(name, stem, title, source, breakdown, parsed, {**TOLERANCES, **tolerance}, other_runs)


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MisatoError(f"mapping {source} is not valid TOML ({error})") from None


def shipped_mapping(name: str) -> TableMapping:
    """The mapping shipped for table ``name`` (one of :data:`TABLE_NAMES`)."""
    if name not in TABLE_FILES:
        parse_table_names([name])
    stem = TABLE_FILES[name]
    source = f"results/mappings/{stem}.toml"
    text = resources.files(__package__).joinpath("mappings", f"{stem}.toml").read_text(encoding="utf-8")
    return parse_mapping(_parse_toml(text, source), source, name, stem)


def load_mapping(path: str | Path) -> TableMapping:
    """A user's mapping file; the table is named (and its files are written) after the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise MisatoError(f"--mapping {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise MisatoError(f"mapping {path} is not UTF-8 text ({error})") from None
    return parse_mapping(_parse_toml(text, str(path)), str(path), path.stem, path.stem)
