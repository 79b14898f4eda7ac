"""Comparison tables across evaluation run folders, with bootstrap intervals and paired tests.

A run folder is what ``misato evaluate --out RUN`` writes:

- ``RUN/summary.json``: ``{"metrics": {name: value}, "n": int, "protocol": str, "weights": {name: sha256},
  "version": str, "method": str | null, "by_domain": {...}, "by_mask_ratio": {...}}``
- ``RUN/per_image.csv``: ``name`` plus one column per per-image metric (and ``mask_ratio``, ``domain``).

Stages, each a pure function: :func:`load_run` → :func:`build_comparison` / :func:`build_breakdown` →
:func:`render` (``csv``, ``md`` or ``tex``). :func:`compare` chains them and writes the file (the CLI's
``misato compare``). Table values are the ones in ``summary.json``; intervals and paired tests are computed from
``per_image.csv`` for metrics whose :attr:`MetricInfo.per_image` is set.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from evaluate.metric_info import ALL_METRICS, METRICS
from evaluate.stats import (
    Interval,
    PairedTest,
    bootstrap_means,
    paired_tests,
    percentile_interval,
)
from misato.errors import MisatoError
from misato.io import atomic_write_text, pair_by_stem, preview_names
from misato.layout import DOMAINS
from results.reported import load_reported

SUMMARY_JSON = "summary.json"
PER_IMAGE_CSV = "per_image.csv"
FORMATS = ("csv", "md", "tex")
BREAKDOWNS = {"domain": "by_domain", "mask_ratio": "by_mask_ratio"}
"""``--by`` value → the ``summary.json`` key holding that breakdown."""
CONFIDENCE = 0.95
IDS_RELIABLE_N = 5 * 2048
"""Below this many images per set (5 × the 2048 feature dimensions), training-set U-IDS/P-IDS are optimistic."""

_SUFFIX_FORMATS = {".csv": "csv", ".md": "md", ".markdown": "md", ".tex": "tex"}


# ----------------------------------------------------------------------------------------------------------------
# Loading run folders


@dataclass(frozen=True)
class Run:
    """One evaluation run: its label, parsed ``summary.json`` and ``per_image.csv`` (indexed by image name)."""

    path: Path
    label: str
    summary: dict
    per_image: pd.DataFrame

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary["metrics"]

    @property
    def n(self) -> int:
        return int(self.summary.get("n", len(self.per_image)))

    @property
    def protocol(self) -> str | None:
        return self.summary.get("protocol")

    @property
    def version(self) -> str | None:
        return self.summary.get("version")

    @property
    def weights(self) -> dict[str, str]:
        return self.summary.get("weights") or {}


def _read_summary(path: Path) -> dict:
    file = path / SUMMARY_JSON
    if not file.is_file():
        raise MisatoError(f"{file} is missing: {path} is not a finished `misato evaluate --out` run folder")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MisatoError(f"{file} is not valid JSON ({error}); re-run `misato evaluate` for this folder") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise MisatoError(f"{file} has no \"metrics\" object; re-run `misato evaluate` for this folder")
    for name, value in summary["metrics"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MisatoError(f"{file}: metric {name!r} is {value!r}, not a finite number")
    if "n" in summary and (isinstance(summary["n"], bool) or not isinstance(summary["n"], int)):
        raise MisatoError(f"{file}: \"n\" is {summary['n']!r}, not an integer image count")
    return summary


def _finite(value, where: str) -> float:
    """``value`` as a finite float, or a MisatoError naming where in summary.json it sits."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise MisatoError(f"summary.json: {where} is {value!r}, not a finite number")
    return number


def _read_per_image(path: Path) -> pd.DataFrame:
    file = path / PER_IMAGE_CSV
    if not file.is_file():
        raise MisatoError(f"{file} is missing: {path} is not a finished `misato evaluate --out` run folder")
    try:
        frame = pd.read_csv(file, dtype={"name": str}, keep_default_na=False, na_values={m: ["", "nan", "NaN"] for m in ALL_METRICS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MisatoError(f"{file} is not a readable CSV ({error})") from None
    if "name" not in frame.columns or frame.empty:
        raise MisatoError(f"{file} needs a 'name' column and at least one image row")
    if (frame["name"].str.strip() == "").any():
        raise MisatoError(f"{file} has rows with an empty 'name'")
    duplicated = frame["name"][frame["name"].duplicated()].tolist()
    if duplicated:
        raise MisatoError(f"{file} lists some images twice: {preview_names(duplicated)}")
    for metric in (m for m in ALL_METRICS if METRICS[m].per_image and m in frame.columns):
        values = pd.to_numeric(frame[metric], errors="coerce")
        bad = frame["name"][~np.isfinite(values.to_numpy(dtype=float))].tolist()
        if bad:
            raise MisatoError(f"{file}: column {metric!r} is empty or not a finite number for {preview_names(bad)}")
        frame[metric] = values.astype(float)
    return frame.set_index("name").sort_index()


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one run folder; ``label`` defaults to ``summary["method"]``, else the folder name."""
    path = Path(path)
    if not path.is_dir():
        raise MisatoError(f"run folder {path} does not exist (pass folders written by `misato evaluate --out`)")
    summary = _read_summary(path)
    per_image = _read_per_image(path)
    label = label or summary.get("method") or path.resolve().name
    return Run(path, str(label), summary, per_image)


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    """Read several run folders; labels (given or defaulted) must be unique."""
    if not paths:
        raise MisatoError("give at least one run folder")
    if labels is not None and len(labels) != len(paths):
        raise MisatoError(f"--labels has {len(labels)} label(s) for {len(paths)} run folder(s)")
    if labels is not None and not all(label.strip() for label in labels):
        raise MisatoError(f"--labels contains an empty label: {','.join(labels)}")
    runs = [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    clashes = [label for label, count in seen.items() if count > 1]
    if clashes:
        shared = ", ".join(map(repr, clashes))
        raise MisatoError(f"several runs share the label {shared}; name them with --labels A,B,...")
    return runs


# ----------------------------------------------------------------------------------------------------------------
# Checks shared by both tables


def _common_metrics(runs: Sequence[Run]) -> tuple[tuple[str, ...], list[str]]:
    """Metrics present in every run (in paper order) and notes about the rest."""
    notes = []
    unknown = sorted({m for run in runs for m in run.metrics if m not in METRICS})
    if unknown:
        notes.append(f"ignored metric(s) this toolkit does not know: {', '.join(unknown)}")
    common = tuple(m for m in ALL_METRICS if all(m in run.metrics for run in runs))
    partial = [m for m in ALL_METRICS if m not in common and any(m in run.metrics for run in runs)]
    if partial:
        notes.append(f"left out metric(s) not computed for every run: {', '.join(partial)}")
    if not common:
        listing = "; ".join(f"{run.label}: {', '.join(run.metrics) or 'none'}" for run in runs)
        raise MisatoError(f"the runs have no metric in common ({listing})")
    return common, notes


def comparability_warnings(runs: Sequence[Run]) -> list[str]:
    """Reasons the runs' numbers are not comparable: different protocols or different weight files."""
    warnings = []
    protocols = {run.label: run.protocol for run in runs}
    if len(set(protocols.values())) > 1:
        listing = ", ".join(f"{label}: {protocol}" for label, protocol in protocols.items())
        warnings.append(f"runs use different protocols ({listing}); their numbers are not comparable")
    weight_names = sorted({name for run in runs for name in run.weights})
    for name in weight_names:
        hashes = {run.label: run.weights[name] for run in runs if name in run.weights}
        if len(set(hashes.values())) > 1:
            listing = ", ".join(f"{label}: {digest[:12]}" for label, digest in hashes.items())
            warnings.append(f"weight file {name!r} differs between runs ({listing}); their numbers are not comparable")
    return warnings


def _check_strict(warnings: list[str], strict: bool) -> None:
    if strict and warnings:
        raise MisatoError("refusing to compare (--strict): " + "; ".join(warnings))


def _best_labels(values: dict[str, float], metric: str, decimals: int) -> set[str]:
    """Labels whose value, rounded as printed, is the best in its column (ties all win; needs >= 2 values)."""
    if len(values) < 2:
        return set()
    rounded = {label: round(value, decimals) for label, value in values.items()}
    pick = max if METRICS[metric].higher_is_better else min
    best = pick(rounded.values())
    return {label for label, value in rounded.items() if value == best}


# ----------------------------------------------------------------------------------------------------------------
# The comparison table


@dataclass(frozen=True)
class Cell:
    """One method × metric entry: the summary value, its bootstrap interval (per-image metrics) and best flag."""

    value: float
    interval: Interval | None
    best: bool


@dataclass(frozen=True)
class Row:
    """One method: its cells and, when ``--reported`` names it, the paper's values (``{metric: value}``)."""

    label: str
    n: int
    protocol: str | None
    version: str | None
    cells: dict[str, Cell]
    reported: dict[str, float] | None


@dataclass(frozen=True)
class ComparisonTable:
    """Rows = methods, columns = ``metrics``; ``paired[label][metric]`` compares a method with ``baseline``."""

    metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    baseline: str | None
    paired: dict[str, dict[str, PairedTest]]
    reported_name: str | None
    reported_caption: str | None
    n_boot: int
    seed: int
    decimals: int
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        """Metrics with a reported value in at least one row."""
        return tuple(m for m in self.metrics if any(r.reported and m in r.reported for r in self.rows))


def _resolve_baseline(runs: Sequence[Run], baseline: str | None) -> Run:
    if baseline is None:
        return runs[0]
    exact = [run for run in runs if run.label == baseline]
    loose = [run for run in runs if run.label.casefold() == baseline.casefold()]
    if exact or len(loose) == 1:
        return (exact or loose)[0]
    raise MisatoError(f"--baseline {baseline!r} is not one of the run labels: {', '.join(r.label for r in runs)}")


def _intervals(run: Run, metrics: Sequence[str], n_boot: int, seed: int) -> dict[str, Interval]:
    """Bootstrap intervals for the per-image metrics of ``run`` that ``per_image.csv`` holds (one shared resample)."""
    columns = [m for m in metrics if METRICS[m].per_image and m in run.per_image.columns]
    if n_boot == 0 or not columns:
        return {}
    values = run.per_image[columns].to_numpy(dtype=np.float64)
    lo, hi = percentile_interval(bootstrap_means(values, n_boot, seed), CONFIDENCE)
    means = values.mean(axis=0)
    return {m: Interval(float(means[i]), float(lo[i]), float(hi[i])) for i, m in enumerate(columns)}


def _consistency_notes(run: Run, metrics: Sequence[str]) -> list[str]:
    """Notes when ``summary.json`` and ``per_image.csv`` disagree (count, missing columns, mean)."""
    notes = []
    if run.n != len(run.per_image):
        notes.append(f"{run.label}: summary.json says n = {run.n} but {PER_IMAGE_CSV} has {len(run.per_image)} rows")
    for metric in (m for m in metrics if METRICS[m].per_image):
        if metric not in run.per_image.columns:
            notes.append(f"{run.label}: {PER_IMAGE_CSV} has no {metric!r} column, so no interval or paired test")
            continue
        mean = float(run.per_image[metric].mean())
        if not math.isclose(mean, run.metrics[metric], rel_tol=1e-4, abs_tol=1e-6):
            notes.append(
                f"{run.label}: summary {metric} = {run.metrics[metric]:.6g} but the mean of {PER_IMAGE_CSV} is "
                f"{mean:.6g}; the table shows the summary value"
            )
    return notes


def _paired_tests(
    runs: Sequence[Run], baseline: Run, metrics: Sequence[str], n_boot: int, seed: int
) -> dict[str, dict[str, PairedTest]]:
    """Each non-baseline run against ``baseline`` on the same images, for per-image metrics both runs hold."""
    per_image_metrics = [m for m in metrics if METRICS[m].per_image and m in baseline.per_image.columns]
    results: dict[str, dict[str, PairedTest]] = {}
    for run in runs:
        shared = [m for m in per_image_metrics if m in run.per_image.columns]
        if run is baseline or not shared:
            continue
        try:
            names = pair_by_stem(
                dict.fromkeys(baseline.per_image.index),
                dict.fromkeys(run.per_image.index),
                f"baseline {baseline.label!r} image",
                f"{run.label!r} image",
            )
        except MisatoError as error:
            raise MisatoError(
                f"paired tests need the same images in every run ({baseline.path / PER_IMAGE_CSV} vs "
                f"{run.path / PER_IMAGE_CSV}): {error}. Compare runs on the same images, or pass --no-paired"
            ) from None
        tests = paired_tests(
            baseline.per_image.loc[names, shared].to_numpy(dtype=np.float64),
            run.per_image.loc[names, shared].to_numpy(dtype=np.float64),
            n_boot=n_boot,
            seed=seed,
            confidence=CONFIDENCE,
        )
        results[run.label] = dict(zip(shared, tests))
    return results


def _ids_note(runs: Sequence[Run], metrics: Sequence[str]) -> list[str]:
    if not {"uids", "pids"} & set(metrics):
        return []
    small = [run for run in runs if run.n < IDS_RELIABLE_N]
    if not small:
        return []
    listing = ", ".join(f"{run.label}: {run.n}" for run in small)
    return [
        f"U-IDS/P-IDS are scores of an SVM on the data it was fitted on: with fewer than {IDS_RELIABLE_N} images "
        f"per set ({listing}) they are optimistic; compare them only between runs with the same N"
    ]


def build_comparison(
    runs: Sequence[Run],
    n_boot: int = 1000,
    seed: int = 0,
    baseline: str | None = None,
    reported: str | None = None,
    strict: bool = False,
    paired: bool = True,
    decimals: int = 3,
) -> ComparisonTable:
    """The comparison table of ``runs`` (rows in the given order).

    Args:
        runs: loaded run folders with unique labels.
        n_boot: bootstrap resamples for intervals and the paired bootstrap (0 = none).
        seed: seed of every resample (the same seed gives the same table).
        baseline: label of the run the others are tested against (default the first run).
        reported: a :func:`results.reported.load_reported` table name whose methods are matched to run labels.
        strict: refuse (:class:`MisatoError`) instead of warning when runs are not comparable.
        paired: run the paired tests (they require identical image names in every run).
        decimals: printed decimals; the best value per column is decided on values rounded to this.
    """
    if n_boot < 0:
        raise MisatoError(f"--bootstrap must be >= 0, got {n_boot}")
    metrics, notes = _common_metrics(runs)
    warnings = comparability_warnings(runs)
    _check_strict(warnings, strict)
    for run in runs:
        notes.extend(_consistency_notes(run, metrics))
    notes.extend(_ids_note(runs, metrics))

    reported_rows: dict[str, dict[str, float] | None] = {run.label: None for run in runs}
    reported_caption = None
    if reported is not None:
        table = load_reported(reported)
        reported_caption = table.caption
        shared = [m for m in metrics if m in table.metrics]
        if not shared:
            raise MisatoError(
                f"reported table {reported!r} has no metric in common with the runs "
                f"(reported: {', '.join(table.metrics)}; measured: {', '.join(metrics)})"
            )
        for run in runs:
            row = table.row(run.label)
            reported_rows[run.label] = {m: row[m] for m in shared} if row else None
        if not any(reported_rows.values()):
            notes.append(
                f"no run label matches a method of {reported!r} ({', '.join(table.values.index)}); "
                "set labels with --labels"
            )

    intervals = {run.label: _intervals(run, metrics, n_boot, seed) for run in runs}
    best = {m: _best_labels({run.label: run.metrics[m] for run in runs}, m, decimals) for m in metrics}
    rows = tuple(
        Row(
            label=run.label,
            n=run.n,
            protocol=run.protocol,
            version=run.version,
            cells={
                m: Cell(float(run.metrics[m]), intervals[run.label].get(m), run.label in best[m]) for m in metrics
            },
            reported=reported_rows[run.label],
        )
        for run in runs
    )
    baseline_run = _resolve_baseline(runs, baseline)
    tests = _paired_tests(runs, baseline_run, metrics, n_boot, seed) if paired else {}
    return ComparisonTable(
        metrics=metrics,
        rows=rows,
        baseline=baseline_run.label if tests else None,
        paired=tests,
        reported_name=reported,
        reported_caption=reported_caption,
        n_boot=n_boot,
        seed=seed,
        decimals=decimals,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------------------
# The breakdown table (--by domain|mask_ratio)


@dataclass(frozen=True)
class BreakdownRow:
    """One group × method: image count, ``{metric: value}`` (a metric may be missing) and the best metrics."""

    group: str
    label: str
    n: int | None
    values: dict[str, float]
    best: frozenset[str]


@dataclass(frozen=True)
class BreakdownTable:
    """Per-domain or per-mask-ratio values from ``summary.json``, rows ordered by group, then run order."""

    by: str
    metrics: tuple[str, ...]
    rows: tuple[BreakdownRow, ...]
    decimals: int
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def _group_order(by: str, groups: Iterable[str]) -> list[str]:
    """Domains in MISATO order (others after, alphabetically); mask-ratio bins by their leading number."""
    groups = set(groups)
    if by == "domain":
        known = [d.name for d in DOMAINS if d.name in groups]
        return known + sorted(groups - set(known))

    def lower_bound(group: str) -> tuple[float, str]:
        match = re.match(r"\s*(\d+(?:\.\d+)?)", group)
        return (float(match.group(1)) if match else math.inf, group)

    return sorted(groups, key=lower_bound)


def build_breakdown(runs: Sequence[Run], by: str, strict: bool = False, decimals: int = 3) -> BreakdownTable:
    """The ``by`` (``"domain"`` or ``"mask_ratio"``) breakdown of ``runs`` from their ``summary.json``."""
    if by not in BREAKDOWNS:
        raise MisatoError(f"--by must be one of {', '.join(BREAKDOWNS)}, got {by!r}")
    key = BREAKDOWNS[by]
    for run in runs:
        if not isinstance(run.summary.get(key), dict) or not run.summary[key]:
            raise MisatoError(f"{run.path / SUMMARY_JSON} has no {key!r} breakdown; re-run `misato evaluate`")
    common, notes = _common_metrics(runs)
    warnings = comparability_warnings(runs)
    _check_strict(warnings, strict)
    entries_of_all_runs = [entry for run in runs for entry in run.summary[key].values() if isinstance(entry, dict)]
    metrics = tuple(m for m in common if any(entry.get(m) is not None for entry in entries_of_all_runs))
    if not metrics:
        raise MisatoError(f"the {key!r} breakdowns hold none of the common metrics ({', '.join(common)})")
    groups = _group_order(by, (g for run in runs for g in run.summary[key]))
    rows = []
    for group in groups:
        entries = {run.label: run.summary[key].get(group) for run in runs}
        values = {
            label: {m: _finite(entry[m], f"{key}[{group!r}][{m!r}] of {label}") for m in metrics
                    if isinstance(entry, dict) and entry.get(m) is not None}
            for label, entry in entries.items()
        }
        best = {
            m: _best_labels({label: v[m] for label, v in values.items() if m in v}, m, decimals) for m in metrics
        }
        for run in runs:
            entry = entries[run.label]
            n = entry.get("n") if isinstance(entry, dict) else None
            rows.append(
                BreakdownRow(
                    group=group,
                    label=run.label,
                    n=n,
                    values=values[run.label],
                    best=frozenset(m for m in metrics if run.label in best[m]),
                )
            )
    return BreakdownTable(by, metrics, tuple(rows), decimals, tuple(warnings), tuple(notes))


# ----------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class _Style:
    """How one text format spells bold, ±, arrows and literal text."""

    bold: Callable[[str], str]
    plus_minus: str
    up: str
    down: str
    delta: str
    missing: str
    escape: Callable[[str], str]


_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}
_TEX_SPECIAL.update({"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"})

_STYLES = {
    "md": _Style(lambda s: f"**{s}**", " ± ", "↑", "↓", "Δ", "–", lambda s: s.replace("|", r"\|")),
    "tex": _Style(
        lambda s: rf"\textbf{{{s}}}",
        r" $\pm$ ",
        r"$\uparrow$",
        r"$\downarrow$",
        r"$\Delta$",
        "--",
        lambda s: "".join(_TEX_SPECIAL.get(c, c) for c in s),
    ),
}


@dataclass(frozen=True)
class _Section:
    """A titled grid of already formatted cells; the first ``left`` columns are left-aligned."""

    title: str
    header: list[str]
    rows: list[list[str]]
    left: int = 1


def _metric_header(metric: str, style: _Style) -> str:
    info = METRICS[metric]
    return style.escape(info.label) + (style.up if info.higher_is_better else style.down)


def _p_text(p: float | None, style: _Style) -> str:
    if p is None:
        return style.missing
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _main_section(table: ComparisonTable, style: _Style) -> _Section:
    d = table.decimals
    header = ["Method", "N"] + [_metric_header(m, style) for m in table.metrics]
    rows = []
    for row in table.rows:
        cells = [style.escape(row.label), str(row.n)]
        for metric in table.metrics:
            cell = row.cells[metric]
            text = f"{cell.value:.{d}f}"
            text = style.bold(text) if cell.best else text
            if cell.interval is not None:
                text += f"{style.plus_minus}{cell.interval.half_width:.{d}f}"
            cells.append(text)
        rows.append(cells)
    return _Section("Comparison", header, rows)


def _paired_section(table: ComparisonTable, style: _Style) -> _Section:
    d = table.decimals + 1
    header = ["Method", "Metric", f"{style.delta} mean", style.escape(f"{CONFIDENCE:.0%} CI"), "p (Wilcoxon)",
              "p (bootstrap)"]
    rows = []
    for label, tests in table.paired.items():
        for metric, test in tests.items():
            interval = style.missing if test.lo is None else f"[{test.lo:+.{d}f}, {test.hi:+.{d}f}]"
            rows.append(
                [
                    style.escape(label),
                    _metric_header(metric, style),
                    f"{test.mean_difference:+.{d}f}",
                    interval,
                    _p_text(test.p_wilcoxon, style),
                    _p_text(test.p_bootstrap, style),
                ]
            )
    title = f"Paired differences vs {table.baseline} (method minus baseline on the same images)"
    return _Section(title, header, rows, left=2)


def _reported_section(table: ComparisonTable, style: _Style) -> _Section:
    d = table.decimals
    metrics = table.reported_metrics
    header = ["Method", "Source"] + [_metric_header(m, style) for m in metrics]
    rows = []
    for row in table.rows:
        if not row.reported:
            continue
        measured = {m: row.cells[m].value for m in metrics}
        rows.append([style.escape(row.label), "measured"] + [f"{measured[m]:.{d}f}" for m in metrics])
        rows.append(
            ["", "paper"] + [f"{row.reported[m]:.{d}f}" if m in row.reported else style.missing for m in metrics]
        )
        rows.append(
            ["", style.delta]
            + [f"{measured[m] - row.reported[m]:+.{d}f}" if m in row.reported else style.missing for m in metrics]
        )
    title = f"Measured vs reported ({table.reported_name}: {table.reported_caption})"
    return _Section(title, header, rows, left=2)


def _comparison_footnote(table: ComparisonTable) -> str:
    per_image = [METRICS[m].label for m in table.metrics if METRICS[m].per_image]
    set_level = [METRICS[m].label for m in table.metrics if not METRICS[m].per_image]
    parts = ["Values from summary.json; best per column in bold (ties at the printed precision all bold)."]
    if table.n_boot and per_image:
        parts.append(
            f"± is half the width of the {CONFIDENCE:.0%} percentile bootstrap interval of the mean over images "
            f"(B = {table.n_boot}, seed {table.seed}); the exact bounds are in the CSV output."
        )
    if set_level:
        parts.append(f"{', '.join(set_level)} are image-set metrics without per-image values: no interval.")
    if table.paired:
        parts.append(
            "Paired tests: Wilcoxon signed-rank (two-sided) and the paired bootstrap of the mean difference "
            "(p resolution 1/(B+1))."
        )
    return " ".join(parts)


def _comparison_sections(table: ComparisonTable, style: _Style) -> list[_Section]:
    sections = [_main_section(table, style)]
    if table.paired:
        sections.append(_paired_section(table, style))
    if any(row.reported for row in table.rows):
        sections.append(_reported_section(table, style))
    return sections


def _breakdown_sections(table: BreakdownTable, style: _Style) -> list[_Section]:
    d = table.decimals
    group_title = "Domain" if table.by == "domain" else "Mask ratio"
    header = [group_title, "Method", "N"] + [_metric_header(m, style) for m in table.metrics]
    rows = []
    previous = None
    for row in table.rows:
        cells = [style.escape(row.group) if row.group != previous else "", style.escape(row.label)]
        cells.append(style.missing if row.n is None else str(row.n))
        for metric in table.metrics:
            if metric not in row.values:
                cells.append(style.missing)
                continue
            text = f"{row.values[metric]:.{d}f}"
            cells.append(style.bold(text) if metric in row.best else text)
        rows.append(cells)
        previous = row.group
    return [_Section(f"Breakdown by {group_title.lower()}", header, rows, left=2)]


def _render_md(sections: list[_Section], footnote: str, warnings: Sequence[str], notes: Sequence[str]) -> str:
    out = []
    for message in warnings:
        out.append(f"> **Warning:** {message}\n")
    for section in sections:
        out.append(f"### {section.title}\n")
        out.append("| " + " | ".join(section.header) + " |")
        out.append("|" + "|".join(":---" if i < section.left else "---:" for i in range(len(section.header))) + "|")
        out.extend("| " + " | ".join(cells) + " |" for cells in section.rows)
        out.append("")
    out.append(footnote)
    out.extend(f"\n- Note: {note}" for note in notes)
    return "\n".join(out) + "\n"


def _render_tex(sections: list[_Section], footnote: str, warnings: Sequence[str], notes: Sequence[str]) -> str:
    escape = _STYLES["tex"].escape
    out = ["% Generated by `misato compare`; needs \\usepackage{booktabs}."]
    out.extend(f"% WARNING: {message}" for message in warnings)
    out.extend(f"% Note: {note}" for note in notes)
    out.append(f"% {footnote}")
    for section in sections:
        columns = "l" * section.left + "r" * (len(section.header) - section.left)
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{escape(section.title)}}}",
            f"\\begin{{tabular}}{{{columns}}}",
            "\\toprule",
            " & ".join(section.header) + " \\\\",
            "\\midrule",
        ]
        out.extend(" & ".join(cells) + " \\\\" for cells in section.rows)
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def _csv_text(header: list[str], rows: list[list[object]], comments: Iterable[str]) -> str:
    buffer = io.StringIO()
    for comment in comments:
        buffer.write(f"# {comment}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    return buffer.getvalue()


def _comparison_csv(table: ComparisonTable) -> str:
    """One row per method; full-precision numbers; ``best`` lists the metrics the row wins (``;``-separated)."""
    interval_metrics = [m for m in table.metrics if any(r.cells[m].interval for r in table.rows)]
    paired_metrics = [m for m in table.metrics if any(m in tests for tests in table.paired.values())]
    header = ["method", "n", "protocol", "version"]
    for metric in table.metrics:
        header += [metric] + ([f"{metric}_lo", f"{metric}_hi"] if metric in interval_metrics else [])
    header.append("best")
    header += [f"{m}_{kind}" for m in table.reported_metrics for kind in ("reported", "delta")]
    paired_kinds = ("diff", "diff_lo", "diff_hi", "p_wilcoxon", "p_bootstrap")
    header += [f"{m}_{kind}" for m in paired_metrics for kind in paired_kinds]
    rows = []
    for row in table.rows:
        values: list[object] = [row.label, row.n, row.protocol, row.version]
        for metric in table.metrics:
            cell = row.cells[metric]
            values.append(cell.value)
            if metric in interval_metrics:
                values += [cell.interval.lo, cell.interval.hi] if cell.interval else [None, None]
        values.append(";".join(m for m in table.metrics if row.cells[m].best))
        for metric in table.reported_metrics:
            paper = (row.reported or {}).get(metric)
            values += [paper, None if paper is None else row.cells[metric].value - paper]
        for metric in paired_metrics:
            test = table.paired.get(row.label, {}).get(metric)
            values += (
                [test.mean_difference, test.lo, test.hi, test.p_wilcoxon, test.p_bootstrap] if test else [None] * 5
            )
        rows.append(values)
    comments = [f"warning: {w}" for w in table.warnings] + [f"note: {n}" for n in table.notes]
    if table.paired:
        comments.append(f"paired columns: method minus baseline {table.baseline!r} on the same images")
    if table.n_boot:
        comments.append(f"intervals: {CONFIDENCE:.0%} percentile bootstrap, B = {table.n_boot}, seed {table.seed}")
    return _csv_text(header, rows, comments)


def _breakdown_csv(table: BreakdownTable) -> str:
    header = [table.by, "method", "n", *table.metrics, "best"]
    rows = [
        [row.group, row.label, row.n, *(row.values.get(m) for m in table.metrics), ";".join(sorted(row.best))]
        for row in table.rows
    ]
    comments = [f"warning: {w}" for w in table.warnings] + [f"note: {n}" for n in table.notes]
    return _csv_text(header, rows, comments)


def render(table: ComparisonTable | BreakdownTable, fmt: str) -> str:
    """The table as text: ``"csv"`` (one machine-readable table, ``#`` comment lines first), ``"md"`` or ``"tex"``."""
    if fmt not in FORMATS:
        raise MisatoError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    breakdown = isinstance(table, BreakdownTable)
    if fmt == "csv":
        return _breakdown_csv(table) if breakdown else _comparison_csv(table)
    style = _STYLES[fmt]
    if breakdown:
        sections = _breakdown_sections(table, style)
        footnote = "Values from the summary.json breakdowns; best per group and column in bold."
    else:
        sections = _comparison_sections(table, style)
        footnote = _comparison_footnote(table)
    renderer = _render_md if fmt == "md" else _render_tex
    return renderer(sections, footnote, table.warnings, table.notes)


def format_for(out: str | Path, fmt: str | None) -> str:
    """``fmt`` if given, else the format named by ``out``'s suffix (``-`` = stdout defaults to ``md``)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise MisatoError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    if str(out) == "-":
        return "md"
    suffix = Path(out).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise MisatoError(f"cannot tell the format of {out} from its suffix; use .csv/.md/.tex or pass --format")
    return _SUFFIX_FORMATS[suffix]


# ----------------------------------------------------------------------------------------------------------------
# Everything at once (what `misato compare` runs)


def compare(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    fmt: str | None = None,
    labels: Sequence[str] | None = None,
    reported: str | None = None,
    by: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    baseline: str | None = None,
    strict: bool = False,
    paired: bool = True,
) -> tuple[str, ComparisonTable | BreakdownTable]:
    """Load ``run_dirs``, build the comparison (or ``by`` breakdown) table, write it to ``out`` atomically.

    ``out == "-"`` writes nothing (the caller prints the text). Returns the rendered text and the table, whose
    ``warnings``/``notes`` the caller may show. See :func:`build_comparison` for the other arguments.
    """
    fmt = format_for(out, fmt)
    if str(out) != "-" and Path(out).is_dir():
        raise MisatoError(f"--out {out} is a folder; give a file name such as {Path(out) / 'comparison.md'}")
    runs = load_runs(run_dirs, labels)
    if by is not None:
        if reported is not None:
            raise MisatoError("--reported cannot be combined with --by (the paper reports no breakdowns)")
        table: ComparisonTable | BreakdownTable = build_breakdown(runs, by, strict=strict)
    else:
        table = build_comparison(
            runs, n_boot=n_boot, seed=seed, baseline=baseline, reported=reported, strict=strict, paired=paired
        )
    text = render(table, fmt)
    if str(out) != "-":
        atomic_write_text(out, text)
    return text, table
