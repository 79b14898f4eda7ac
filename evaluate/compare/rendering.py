"""Text for the tables of :mod:`evaluate.compare.tables`: ``md``, ``tex`` (booktabs) or machine-readable ``csv``.

:func:`render` is the one entry point; :func:`format_for` picks the format from an output file name.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from evaluate import schema
from evaluate.compare.tables import CONFIDENCE, BreakdownTable, ComparisonTable
from evaluate.metric_info import METRICS
from misato.errors import MisatoError

FORMATS = ("csv", "md", "tex")
_SUFFIX_FORMATS = {".csv": "csv", ".md": "md", ".markdown": "md", ".tex": "tex"}


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

STYLES = {
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


def metric_header(metric: str, style: _Style) -> str:
    """The metric's printed name with ↑ or ↓ in ``style``."""
    info = METRICS[metric]
    return style.escape(info.label) + (style.up if info.higher_is_better else style.down)


def _p_text(p: float | None, style: _Style) -> str:
    if p is None:
        return style.missing
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _main_section(table: ComparisonTable, style: _Style) -> _Section:
    d = table.decimals
    header = ["Method", "N"] + [metric_header(m, style) for m in table.metrics]
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
                    metric_header(metric, style),
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
    header = ["Method", "Source"] + [metric_header(m, style) for m in metrics]
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
    parts = [f"Values from {schema.SUMMARY_JSON}; best per column in bold (ties at the printed precision all bold)."]
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
    header = [group_title, "Method", "N"] + [metric_header(m, style) for m in table.metrics]
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
    escape = STYLES["tex"].escape
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
    style = STYLES[fmt]
    if breakdown:
        sections = _breakdown_sections(table, style)
        footnote = f"Values from the {schema.SUMMARY_JSON} breakdowns; best per group and column in bold."
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
