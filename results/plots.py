"""Plots of evaluation runs (matplotlib, Agg; PNG + SVG): metric vs hole ratio, per-domain bars, FID vs LPIPS.

Run folders are read with :func:`evaluate.compare.load_runs`. Three figures, each a :class:`matplotlib.figure.Figure`
built by a pure function (the tests read their series back):

- :func:`plot_by_mask_ratio`: one panel per per-image metric; per method the mean over the images of each hole-ratio
  bin (:func:`evaluate.schema.mask_ratio_bin`) as a line, with its percentile-bootstrap interval
  (:func:`evaluate.stats.bootstrap_means`, ``n_boot`` resamples, seed ``seed``) as a band; a bin a method has
  no image in is a gap.
- :func:`plot_by_domain`: one panel per metric; grouped bars (domains × methods). Per-image metrics: the mean over
  the domain's images with bootstrap error bars; FID: the evaluator's per-domain value from ``summary.json``
  (no error bar; domains of fewer than 2 images have none).
- :func:`plot_fid_vs_lpips`: one point per method at (LPIPS, FID) from ``summary.json``, labelled; methods
  lacking either are left out (and named in the notes).

:func:`plot` writes them to a folder (``plots.json`` records settings, notes and provenance).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluate import schema
from evaluate.compare import CONFIDENCE, DEFAULT_BOOTSTRAP, Run, load_runs
from evaluate.compare.tables import group_order
from evaluate.metric_info import ALL_METRICS, METRICS
from evaluate.stats import bootstrap_means, percentile_interval
from misato.cli_choices import BOOTSTRAP_RANGE, SEED_RANGE
from misato.errors import MisatoError
from misato.io import atomic_write_bytes, atomic_write_text
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance

PLOTS_FILE = "plots.json"
KINDS = ("mask_ratio", "domain", "fid_lpips")
"""The figures :func:`plot` can write; each is saved as ``<kind>.png`` and ``<kind>.svg``."""
PLOT_POLICY = OutputPolicy(what="plot set", markers=(PLOTS_FILE,), can_resume=False,
                           owned=(*(f"{kind}.{ext}" for kind in KINDS for ext in ("png", "svg")), PLOTS_FILE))
PANEL_SIZE = (4.2, 3.2)
"""Inches per panel."""
DPI = 110
SVG_SALT = "misato"
"""Fixed ``svg.hashsalt``: the same runs give the same SVG bytes."""


@dataclass(frozen=True)
class GroupStats:
    """One method's values of one metric over groups (in ``groups`` order); NaN where a group is empty or has
    no value. ``lo``/``hi`` are the bootstrap interval of the mean (NaN when there is none)."""

    groups: tuple[str, ...]
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray


def _group_column(run: Run, by: str) -> np.ndarray:
    """Each image's group label: its domain, or its hole-ratio bin."""
    if by == "domain":
        if schema.DOMAIN_COLUMN not in run.per_image.columns:
            raise MisatoError(f"{run.path / schema.PER_IMAGE_CSV} has no {schema.DOMAIN_COLUMN!r} column")
        return run.per_image[schema.DOMAIN_COLUMN].astype(str).to_numpy()
    if schema.MASK_RATIO_COLUMN not in run.per_image.columns:
        raise MisatoError(f"{run.path / schema.PER_IMAGE_CSV} has no {schema.MASK_RATIO_COLUMN!r} column")
    return np.array([schema.mask_ratio_bin(r) for r in run.per_image[schema.MASK_RATIO_COLUMN]])


def groups_of(runs: Sequence[Run], by: str) -> tuple[str, ...]:
    """Every group any run has, in the schema's order (domains as MISATO orders them, bins increasing)."""
    return tuple(group_order(by, {g for run in runs for g in _group_column(run, by)}))


def group_stats(run: Run, metric: str, by: str, groups: Sequence[str], n_boot: int = DEFAULT_BOOTSTRAP,
                seed: int = 0) -> GroupStats:
    """``metric``'s mean and bootstrap interval per group of ``run``.

    Per-image metrics come from ``per_image.csv`` (the interval resamples the group's images with
    ``numpy.random.default_rng(seed)``, :data:`~evaluate.compare.CONFIDENCE` level); set metrics (FID) from
    ``summary.json``'s breakdown, without an interval.
    """
    k = len(groups)
    mean, lo, hi, n = (np.full(k, np.nan) for _ in range(4))
    labels = _group_column(run, by)
    for i, group in enumerate(groups):
        members = labels == group
        n[i] = members.sum()
        if METRICS[metric].per_image:
            if not members.any():
                continue
            values = run.per_image[metric].to_numpy(dtype=np.float64)[members]
            mean[i] = values.mean()
            if n_boot > 0:
                low, high = percentile_interval(bootstrap_means(values, n_boot, seed), CONFIDENCE)
                lo[i], hi[i] = low[0], high[0]
        else:
            entry = (run.summary.get(schema.BREAKDOWNS[by]) or {}).get(group) or {}
            if entry.get(metric) is not None:
                mean[i] = float(entry[metric])
    return GroupStats(tuple(groups), mean, lo, hi, n)


def _per_image_metrics(runs: Sequence[Run]) -> tuple[str, ...]:
    metrics = tuple(m for m in ALL_METRICS if METRICS[m].per_image and all(m in r.per_image.columns for r in runs))
    if not metrics:
        raise MisatoError("the runs share no per-image metric (" + "; ".join(
            f"{r.label}: {', '.join(c for c in r.per_image.columns if c in METRICS) or 'none'}" for r in runs) + ")")
    return metrics


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    columns = min(n_panels, 3)
    rows = -(-n_panels // columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return figure, axes[:n_panels]


def _tick_labels(runs: Sequence[Run], by: str, groups: Sequence[str]) -> list[str]:
    """Group names, with the image count underneath when every run has the same count in that group."""
    counts = [np.array([np.count_nonzero(_group_column(run, by) == g) for g in groups]) for run in runs]
    if any(not np.array_equal(c, counts[0]) for c in counts):
        return list(groups)
    return [f"{group}\nn={n}" for group, n in zip(groups, counts[0])]


def _title(metric: str) -> str:
    return f"{METRICS[metric].label} {METRICS[metric].arrow}"


def plot_by_mask_ratio(runs: Sequence[Run], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    """The metric-vs-hole-ratio figure: per panel (per-image metric, title ``"PSNR ↑"``) one line per run
    (``label`` = the run's label, y = the bin means) and one band (``fill_between``) per run when ``n_boot > 0``."""
    metrics = _per_image_metrics(runs)
    groups = groups_of(runs, "mask_ratio")
    figure, axes = _figure(len(metrics))
    x = np.arange(len(groups))
    for axis, metric in zip(axes, metrics):
        for run in runs:
            stats = group_stats(run, metric, "mask_ratio", groups, n_boot, seed)
            (line,) = axis.plot(x, stats.mean, marker="o", label=run.label)
            if n_boot > 0:
                axis.fill_between(x, stats.lo, stats.hi, color=line.get_color(), alpha=0.2, linewidth=0,
                                  label=f"{run.label} {int(CONFIDENCE * 100)}% CI")
        axis.set_xticks(x, _tick_labels(runs, "mask_ratio", groups), rotation=30)
        axis.set_xlabel("hole ratio")
        axis.set_title(_title(metric))
        axis.grid(alpha=0.3)
    band = f"; bands: {int(CONFIDENCE * 100)}% bootstrap interval ({n_boot} resamples)" if n_boot > 0 else ""
    figure.suptitle(f"mean per hole-ratio bin{band}", fontsize="medium")
    figure.legend(handles=list(axes[0].lines), loc="outside lower center", ncols=min(len(runs), 6))
    return figure


def plot_by_domain(runs: Sequence[Run], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    """The per-domain figure: per panel (per-image metrics, then FID when every run has it) one
    ``BarContainer`` per run (``label`` = the run's label, heights = the domain values in :func:`groups_of`
    order), with an ``ErrorbarContainer`` (the bootstrap interval) for per-image metrics when ``n_boot > 0``."""
    metrics = list(_per_image_metrics(runs))
    if all("fid" in run.metrics for run in runs):
        metrics.append("fid")
    groups = groups_of(runs, "domain")
    figure, axes = _figure(len(metrics))
    x = np.arange(len(groups))
    width = 0.8 / len(runs)
    legend = []
    for axis, metric in zip(axes, metrics):
        for i, run in enumerate(runs):
            stats = group_stats(run, metric, "domain", groups, n_boot, seed)
            errors = None
            if METRICS[metric].per_image and n_boot > 0:
                errors = np.vstack([stats.mean - stats.lo, stats.hi - stats.mean])
            bars = axis.bar(x - 0.4 + (i + 0.5) * width, stats.mean, width, yerr=errors, capsize=2, label=run.label)
            if axis is axes[0]:
                legend.append(bars)
        axis.set_xticks(x, _tick_labels(runs, "domain", groups), rotation=30)
        axis.set_title(_title(metric))
        axis.grid(alpha=0.3, axis="y")
    bars = f"; error bars: {int(CONFIDENCE * 100)}% bootstrap interval" if n_boot > 0 else ""
    fid_note = " (FID: the evaluator's per-domain value)" if "fid" in metrics else ""
    figure.suptitle(f"per domain{bars}{fid_note}", fontsize="medium")
    figure.legend(handles=legend, loc="outside lower center", ncols=min(len(runs), 6))
    return figure


def plot_fid_vs_lpips(runs: Sequence[Run]):
    """The FID-vs-LPIPS scatter (one ``scatter`` collection, offsets = (LPIPS, FID) per run, each point annotated
    with its label), and the labels of runs lacking either metric; ``(None, missing)`` when no run has both."""
    shown = [run for run in runs if {"fid", "lpips"} <= set(run.metrics)]
    missing = [run.label for run in runs if run not in shown]
    if not shown:
        return None, missing
    figure, (axis,) = _figure(1)
    points = np.array([[run.metrics["lpips"], run.metrics["fid"]] for run in shown])
    axis.scatter(points[:, 0], points[:, 1])
    for run, (lpips, fid) in zip(shown, points):
        axis.annotate(run.label, (lpips, fid), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axis.margins(0.15)  # room for the labels of the outermost points
    axis.set_xlabel(_title("lpips"))
    axis.set_ylabel(_title("fid"))
    axis.set_title("FID vs LPIPS (lower left is better)")
    axis.grid(alpha=0.3)
    return figure, missing


def save_figure(figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (no dates in the files: same figure, same bytes)."""
    import io

    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    written = []
    for ext, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buffer = io.BytesIO()
        with rc_context({"svg.hashsalt": SVG_SALT}):
            figure.savefig(buffer, format=ext, metadata=metadata)
        path = stem.with_name(f"{stem.name}.{ext}")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def plot(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, labels: Sequence[str] | None = None,
         kinds: Sequence[str] = KINDS, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
         overwrite: bool = False) -> dict:
    """Write the ``kinds`` figures of ``run_dirs`` (evaluation run folders) into the folder ``out``.

    Returns:
        ``{"files": [paths written], "notes": [...]}``.
    Raises:
        MisatoError: a folder that is not an evaluation run, duplicate or miscounted labels, an unknown kind,
        runs sharing no per-image metric, a negative ``n_boot``, or ``out`` holding something else.
    """
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise MisatoError(f"unknown plot kind(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(KINDS)}")
    if not BOOTSTRAP_RANGE[0] <= n_boot <= BOOTSTRAP_RANGE[1]:
        raise MisatoError(f"--bootstrap must be >= 0 and <= {BOOTSTRAP_RANGE[1]}, got {n_boot}")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise MisatoError(f"--seed must be from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {seed}")
    runs = load_runs(run_dirs, labels)
    out = Path(out)
    prepare_output(out, PLOT_POLICY, overwrite=overwrite, inputs=[run.path for run in runs])
    files, notes = [], []
    for kind in kinds:
        if kind == "mask_ratio":
            figure = plot_by_mask_ratio(runs, n_boot, seed)
        elif kind == "domain":
            figure = plot_by_domain(runs, n_boot, seed)
        else:
            figure, missing = plot_fid_vs_lpips(runs)
            if missing:
                notes.append(f"FID-vs-LPIPS leaves out {', '.join(missing)} (no FID or LPIPS in summary.json)")
            if figure is None:
                continue
        files += save_figure(figure, out / kind)
    record = {"runs": [str(run.path.resolve()) for run in runs], "labels": [run.label for run in runs],
              "kinds": list(kinds), "bootstrap": n_boot, "seed": seed, "confidence": CONFIDENCE,
              "files": [path.name for path in files], "notes": notes, "provenance": provenance(("matplotlib",))}
    atomic_write_text(out / PLOTS_FILE, json.dumps(record, indent=2))
    return {"files": files, "notes": notes}
