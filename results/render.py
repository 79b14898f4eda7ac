"""Text of a :class:`results.paper.PaperTable`: ``csv`` (full precision), ``md`` and ``tex`` (a booktabs fragment).

Markdown and LaTeX print the paper's 3 decimals, the best value per column in bold and ↑/↓ in the header (from
:data:`evaluate.metric_info.METRICS`); a flagged cell carries † and an empty cell is a dash. With reported numbers
every method gets two more lines, the reported value and Δ = measured − reported (✗ / ×: outside the tolerance),
and the table ends with its verdict. The CSV has one line per method and section, ``#`` comment lines first.
"""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from evaluate.compare.rendering import STYLES, metric_header
from evaluate.metric_info import METRICS
from misato.errors import MisatoError

if TYPE_CHECKING:
    from results.paper import PaperTable, TableRow, TableSection

DECIMALS = 3
"""Printed decimals (the paper's); the best value per column is decided at this precision."""
FORMATS = ("csv", "md", "tex")

_FLAG = {"md": "†", "tex": r"$^\dagger$"}
_OUTSIDE = {"md": " ✗", "tex": r"$^\times$"}
"""Marks of a flagged cell and of a Δ outside the tolerance."""


def _number(value: float | None, fmt: str, best: bool = False, flagged: bool = False) -> str:
    style = STYLES[fmt]
    if value is None:
        return style.missing
    text = f"{value:.{DECIMALS}f}"
    return (style.bold(text) if best else text) + (_FLAG[fmt] if flagged else "")


def _delta(row: TableRow, metric: str, table: PaperTable, fmt: str) -> str:
    cell = row.cells[metric]
    if cell.delta is None:
        return STYLES[fmt].missing
    outside = cell.within(table.tolerance[metric]) is False
    text = f"{cell.delta:+.{DECIMALS}f}"
    return (f"${text}$" if fmt == "tex" else text) + (_OUTSIDE[fmt] if outside else "")  # TeX: a minus, not a hyphen


def _with_reported(table: PaperTable) -> bool:
    return table.vs_reported and any(section.reported for section in table.sections)


def _header(table: PaperTable, section: TableSection, fmt: str) -> list[str]:
    style = STYLES[fmt]
    header = ["Method"] + (["Source"] if _with_reported(table) else []) + (["N"] if table.breakdown else [])
    return header + [metric_header(m, style) for m in section.metrics]


def _grid(table: PaperTable, section: TableSection, fmt: str) -> list[list[str]]:
    """The section's formatted cells, one list per printed line."""
    style = STYLES[fmt]
    lines = []
    for row in section.rows:
        first = [style.escape(row.label)]
        if table.breakdown:
            first.append(style.missing if row.n is None else str(row.n))
        values = [_number(row.cells[m].value, fmt, row.cells[m].best, row.cells[m].flagged) for m in section.metrics]
        if not _with_reported(table):
            lines.append(first + values)
            continue
        reported = [_number(row.cells[m].reported, fmt) for m in section.metrics]
        lines.append(first[:1] + ["measured"] + first[1:] + values)
        lines.append(["", "reported"] + [""] * (len(first) - 1) + reported)
        deltas = [_delta(row, m, table, fmt) for m in section.metrics]
        lines.append(["", style.delta] + [""] * (len(first) - 1) + deltas)
    return lines


def _titled(table: PaperTable) -> bool:
    """Whether sections print their title: when there are several, and always in a breakdown (the title is the
    domain or hole-ratio bin)."""
    return len(table.sections) > 1 or table.breakdown is not None


def _left(table: PaperTable) -> int:
    return 2 if _with_reported(table) else 1


def _footnotes(table: PaperTable) -> list[str]:
    parts = [f"Best per column in bold (unflagged runs, at the printed {DECIMALS} decimals)."]
    if any(row.flags for section in table.sections for row in section.rows):
        parts.append("† measured with another protocol, number of images or resolution than the table's: shown, "
                     "but not marked best and not compared.")
    if _with_reported(table):
        tolerance = ", ".join(f"{METRICS[m].label} {table.tolerance[m]:g}" for m in table.metrics)
        parts.append(f"Δ = measured − reported; outside the tolerance |Δ| ≤ ({tolerance}) marked.")
    return parts


def _sources(table: PaperTable) -> list[str]:
    return list(dict.fromkeys(section.reported_source for section in table.sections if section.reported_source))


def _render_md(table: PaperTable) -> str:
    out = [f"## {table.title}", ""]
    for section in table.sections:
        if _titled(table):
            out += [f"### {section.title}", ""]
        header = _header(table, section, "md")
        left = _left(table)
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|")
        out.extend("| " + " | ".join(cells) + " |" for cells in _grid(table, section, "md"))
        out.append("")
    out.append(" ".join(_footnotes(table)))
    out.extend(f"\nReported: {source}" for source in _sources(table))
    if table.verdict:
        out.append(f"\n**Verdict:** {table.verdict}")
    if table.notes:
        out.append("")
        out.extend(f"- Note: {note}" for note in table.notes)
    return "\n".join(out) + "\n"


def _render_tex(table: PaperTable) -> str:
    escape = STYLES["tex"].escape
    comments = [f"Generated by `misato tables` (table {table.name}: {table.title}); needs \\usepackage{{booktabs}}.",
                *_footnotes(table), *(f"Reported: {source}" for source in _sources(table))]
    if table.verdict:
        comments.append(f"Verdict: {table.verdict}")
    comments += [f"Note: {note}" for note in table.notes]
    out = [f"% {line}" for line in comments]
    header = _header(table, table.sections[0], "tex")  # every section has the same columns
    width = len(header)
    out += [f"\\begin{{tabular}}{{{'l' * _left(table)}{'r' * (width - _left(table))}}}", "\\toprule",
            " & ".join(header) + " \\\\"]
    for section in table.sections:
        out.append("\\midrule")
        if _titled(table):
            out.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{escape(section.title)}}}}} \\\\")
        out.extend(" & ".join(cells) + " \\\\" for cells in _grid(table, section, "tex"))
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def _csv_value(value) -> object:
    return "" if value is None else value


def _render_csv(table: PaperTable) -> str:
    """One line per section × method; metric values at full precision; with reported numbers ``<m>_reported``,
    ``<m>_delta`` and ``<m>_within`` (``yes``/``no``, empty when not compared) per metric."""
    metrics = table.metrics
    reported = _with_reported(table)
    first = table.breakdown or "benchmark"
    header = [first, "method", "run", "n", "protocol", *metrics]
    if reported:
        header += [f"{m}_{kind}" for m in metrics for kind in ("reported", "delta", "within")]
    header += ["flags", "note"]
    lines = []
    for section in table.sections:
        for row in section.rows:
            cells = [row.cells.get(m) for m in metrics]
            line = [section.title, row.label, row.run, _csv_value(row.n), _csv_value(row.protocol)]
            line += [_csv_value(cell.value if cell else None) for cell in cells]
            if reported:
                for metric, cell in zip(metrics, cells):
                    within = None if cell is None else cell.within(table.tolerance[metric])
                    line += [_csv_value(cell and cell.reported), _csv_value(cell and cell.delta),
                             "" if within is None else ("yes" if within else "no")]
            line += ["; ".join(row.flags), "" if row.found else "no run folder"]
            lines.append(line)
    buffer = io.StringIO()
    comments = [table.title, *(f"reported: {s}" for s in _sources(table))]
    comments += [f"verdict: {table.verdict}"] if table.verdict else []
    comments += [f"note: {note}" for note in table.notes]
    buffer.writelines(f"# {comment}\n" for comment in comments)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    return buffer.getvalue()


def render(table: PaperTable, fmt: str) -> str:
    """``table`` as ``"csv"``, ``"md"`` or ``"tex"`` text."""
    if fmt not in FORMATS:
        raise MisatoError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {"csv": _render_csv, "md": _render_md, "tex": _render_tex}[fmt](table)
