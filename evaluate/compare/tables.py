"""The two tables of ``misato compare``, built from loaded runs: the comparison and the ``--by`` breakdown.

:func:`build_comparison` takes the values from each ``summary.json``, bootstrap intervals and paired tests from
``per_image.csv`` for metrics whose :attr:`MetricInfo.per_image` is set, and the paper's numbers through
:func:`results.tables.join_reported`. :func:`build_breakdown` takes the ``by_domain`` / ``by_mask_ratio`` entries.
Both return frozen dataclasses that :mod:`evaluate.compare.rendering` turns into text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from evaluate import schema
from evaluate.compare.loading import Run
from evaluate.metric_info import ALL_METRICS, IDS_MIN_SAMPLES, METRICS
from evaluate.stats import Interval, PairedTest, bootstrap_means, paired_tests, percentile_interval
from misato.errors import MisatoError
from misato.io import pair_by_stem
from misato.layout import DOMAINS
from results.tables import join_reported

CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 1000
"""Bootstrap resamples when none are asked for."""


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


def best_labels(values: dict[str, float], metric: str, decimals: int) -> set[str]:
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
    """Notes when ``per_image.csv`` lacks a metric column or its mean disagrees with ``summary.json``."""
    notes = []
    for metric in (m for m in metrics if METRICS[m].per_image):
        if metric not in run.per_image.columns:
            notes.append(f"{run.label}: {schema.PER_IMAGE_CSV} has no {metric!r} column, so no interval or paired test")
            continue
        mean = float(run.per_image[metric].mean())
        if not math.isclose(mean, run.metrics[metric], rel_tol=1e-4, abs_tol=1e-6):
            notes.append(
                f"{run.label}: summary {metric} = {run.metrics[metric]:.6g} but the mean of {schema.PER_IMAGE_CSV} is "
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
                f"paired tests need the same images in every run ({baseline.path / schema.PER_IMAGE_CSV} vs "
                f"{run.path / schema.PER_IMAGE_CSV}): {error}. Compare runs on the same images, or pass --no-paired"
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
    small = [run for run in runs if 2 * run.n < IDS_MIN_SAMPLES]
    if not small:
        return []
    listing = ", ".join(f"{run.label}: {run.n}" for run in small)
    return [
        f"U-IDS/P-IDS are scores of an SVM on the data it was fitted on: with fewer than {IDS_MIN_SAMPLES} samples "
        f"(2 × N images; N here: {listing}) they are optimistic; compare them only between runs with the same N"
    ]


def build_comparison(
    runs: Sequence[Run],
    n_boot: int = DEFAULT_BOOTSTRAP,
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
        reported: a :func:`results.reported.load_reported` table name whose methods are matched to run labels
            (see :func:`results.tables.join_reported`, which also warns when a run's N or resolution is not
            the paper's).
        strict: refuse (:class:`MisatoError`) instead of warning when runs use different protocols or weights.
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
        join = join_reported(reported, runs, metrics)
        reported_rows, reported_caption = join.rows, join.table.caption
        warnings.extend(join.warnings)
        notes.extend(join.notes)

    intervals = {run.label: _intervals(run, metrics, n_boot, seed) for run in runs}
    best = {m: best_labels({run.label: run.metrics[m] for run in runs}, m, decimals) for m in metrics}
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


def group_order(by: str, groups: Iterable[str]) -> list[str]:
    """Domains in MISATO order, mask-ratio bins in increasing order; groups the schema does not know after, sorted."""
    groups = set(groups)
    order = [d.name for d in DOMAINS] if by == "domain" else list(schema.MASK_RATIO_LABELS)
    known = [g for g in order if g in groups]
    return known + sorted(groups - set(known))


def _finite(value, where: str) -> float:
    """``value`` as a finite float, or a MisatoError naming where in summary.json it sits."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise MisatoError(f"{schema.SUMMARY_JSON}: {where} is {value!r}, not a finite number")
    return number


def build_breakdown(runs: Sequence[Run], by: str, strict: bool = False, decimals: int = 3) -> BreakdownTable:
    """The ``by`` (``"domain"`` or ``"mask_ratio"``) breakdown of ``runs`` from their ``summary.json``."""
    if by not in schema.BREAKDOWNS:
        raise MisatoError(f"--by must be one of {', '.join(schema.BREAKDOWNS)}, got {by!r}")
    key = schema.BREAKDOWNS[by]
    for run in runs:
        if not isinstance(run.summary.get(key), dict) or not run.summary[key]:
            raise MisatoError(f"{run.path / schema.SUMMARY_JSON} has no {key!r} breakdown; re-run `misato evaluate`")
    common, notes = _common_metrics(runs)
    warnings = comparability_warnings(runs)
    _check_strict(warnings, strict)
    entries_of_all_runs = [entry for run in runs for entry in run.summary[key].values() if isinstance(entry, dict)]
    metrics = tuple(m for m in common if any(entry.get(m) is not None for entry in entries_of_all_runs))
    if not metrics:
        raise MisatoError(f"the {key!r} breakdowns hold none of the common metrics ({', '.join(common)})")
    groups = group_order(by, (g for run in runs for g in run.summary[key]))
    rows = []
    for group in groups:
        entries = {run.label: run.summary[key].get(group) for run in runs}
        values = {
            label: {m: _finite(entry[m], f"{key}[{group!r}][{m!r}] of {label}") for m in metrics
                    if isinstance(entry, dict) and entry.get(m) is not None}
            for label, entry in entries.items()
        }
        best = {
            m: best_labels({label: v[m] for label, v in values.items() if m in v}, m, decimals) for m in metrics
        }
        for run in runs:
            entry = entries[run.label]
            n = entry.get(schema.BREAKDOWN_N) if isinstance(entry, dict) else None
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

