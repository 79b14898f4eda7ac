"""Reading run folders (see :mod:`evaluate.schema`) into validated :class:`Run` objects.

Everything a table needs is checked here, so the table builders can trust their input: a damaged, truncated or
inconsistent run folder is a :class:`~misato.errors.MisatoError` naming the file.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from evaluate import schema
from misato.errors import MisatoError
from misato.labels import check_given_labels, check_unique_labels
from misato.io import preview_names

RERUN = "re-run `misato evaluate` for this folder"


@dataclass(frozen=True)
class Run:
    """One evaluation run: its label, parsed ``summary.json`` and ``per_image.csv`` (indexed by image name)."""

    path: Path
    label: str
    summary: dict
    per_image: pd.DataFrame

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary[schema.SUMMARY_METRICS]

    @property
    def n(self) -> int:
        return int(self.summary[schema.SUMMARY_N])

    @property
    def protocol(self) -> str | None:
        return self.summary.get(schema.SUMMARY_PROTOCOL)

    @property
    def version(self) -> str | None:
        return self.summary.get(schema.SUMMARY_VERSION)

    @property
    def weights(self) -> dict[str, str]:
        return self.summary.get(schema.SUMMARY_WEIGHTS) or {}

    @property
    def image_sizes(self) -> tuple[tuple[int, int], ...] | None:
        """The distinct ``(height, width)`` of the run's images, or None when ``summary.json`` does not record them."""
        sizes = self.summary.get(schema.SUMMARY_IMAGE_SIZES)
        return None if sizes is None else tuple((int(h), int(w)) for h, w in sizes)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_summary(path: Path) -> dict:
    file = path / schema.SUMMARY_JSON
    if not file.is_file():
        raise MisatoError(f"{file} is missing: {path} is not a finished `misato evaluate --out` run folder")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MisatoError(f"{file} is not valid JSON ({error}); {RERUN}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get(schema.SUMMARY_METRICS), dict):
        raise MisatoError(f"{file} has no \"{schema.SUMMARY_METRICS}\" object; {RERUN}")
    for name, value in summary[schema.SUMMARY_METRICS].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MisatoError(f"{file}: metric {name!r} is {value!r}, not a finite number")
    if schema.SUMMARY_N not in summary:  # without it a per_image.csv cut at a line end would pass as whole
        raise MisatoError(f"{file} has no \"{schema.SUMMARY_N}\" (the image count), so {schema.PER_IMAGE_CSV} cannot "
                          f"be checked for truncation; {RERUN}")
    if not _is_count(summary[schema.SUMMARY_N]):
        raise MisatoError(f"{file}: \"{schema.SUMMARY_N}\" is {summary[schema.SUMMARY_N]!r}, not an image count")
    sizes = summary.get(schema.SUMMARY_IMAGE_SIZES)
    if sizes is not None and not (
        isinstance(sizes, list) and all(isinstance(s, list) and len(s) == 2 and all(map(_is_count, s)) for s in sizes)
    ):
        raise MisatoError(f"{file}: \"{schema.SUMMARY_IMAGE_SIZES}\" is {sizes!r}, not a list of [height, width]")
    return summary


def _read_rows(file: Path) -> tuple[list[str], list[list[str]]]:
    """Header and non-blank rows of a CSV, every field as text; a row with another field count is an error."""
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows, ragged = [], []
            for record in reader:
                if record:
                    rows.append(record)
                    if len(record) != len(header):
                        ragged.append(reader.line_num)
    except (csv.Error, UnicodeDecodeError) as error:
        raise MisatoError(f"{file} is not a readable CSV ({error})") from None
    if ragged:
        raise MisatoError(
            f"{file}: {len(ragged)} row(s) do not have the {len(header)} fields of the header "
            f"({','.join(header)}), first at line {ragged[0]}: the file is truncated or damaged; {RERUN}"
        )
    duplicated = sorted({column for column in header if header.count(column) > 1})
    if duplicated:
        raise MisatoError(f"{file}: the header names some columns twice: {', '.join(duplicated)}")
    return header, rows


def _read_per_image(path: Path, n: int) -> pd.DataFrame:
    file = path / schema.PER_IMAGE_CSV
    if not file.is_file():
        raise MisatoError(f"{file} is missing: {path} is not a finished `misato evaluate --out` run folder")
    header, rows = _read_rows(file)
    name = schema.NAME_COLUMN
    if name not in header or not rows:
        raise MisatoError(f"{file} needs a {name!r} column and at least one image row")
    frame = pd.DataFrame(rows, columns=header)
    if (frame[name].str.strip() == "").any():
        raise MisatoError(f"{file} has rows with an empty {name!r}")
    duplicated = frame[name][frame[name].duplicated()].tolist()
    if duplicated:
        raise MisatoError(f"{file} lists some images twice: {preview_names(duplicated)}")
    if len(rows) != n:
        raise MisatoError(
            f"{file} has {len(rows)} image row(s) but {schema.SUMMARY_JSON} says n = {n}: the file is truncated or "
            f"from another run; {RERUN}"
        )
    for column in (c for c in (*schema.PER_IMAGE_METRICS, schema.MASK_RATIO_COLUMN) if c in frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = frame[name][~np.isfinite(values)].tolist()
        if bad:
            raise MisatoError(f"{file}: column {column!r} is empty or not a finite number for {preview_names(bad)}")
        frame[column] = values
    return frame.set_index(name).sort_index()


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one run folder; ``label`` defaults to ``summary["method"]``, else the folder name."""
    path = Path(path)
    if not path.is_dir():
        raise MisatoError(f"run folder {path} does not exist (pass folders written by `misato evaluate --out`)")
    summary = _read_summary(path)
    per_image = _read_per_image(path, summary[schema.SUMMARY_N])
    label = label or summary.get(schema.SUMMARY_METHOD) or path.resolve().name
    return Run(path, str(label), summary, per_image)


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    """Read several run folders; labels (given or defaulted) must be unique."""
    check_given_labels(labels, len(paths), "run folder")
    runs = [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    check_unique_labels([run.label for run in runs], "run")
    return runs
