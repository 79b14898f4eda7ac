"""The numbers the ASUKA/MISATO paper reports, one CSV per table, shipped as package data.

Each CSV has a ``method`` column plus one column per metric, named as in :data:`evaluate.metric_info.METRICS`
(``psnr``, ``ssim``, ``lpips``, ``fid``, ``uids``, ``pids``, ``grad``, ``clip``); the user study uses
``consistency`` and ``quality`` (percent of votes). Values are typed exactly as the paper (or the official README)
prints them. ``asuka_flux`` covers two
benchmarks and therefore also has a ``dataset`` column: pick one with ``"asuka_flux:MISATO@512"``.

``clip_global`` (the official README's global CLIP scores of Table 1) also has a ``dataset`` column
(``MISATO@512``, ``Places2``); a method the README prints "-" for has no row there.

``benchmarks.csv`` states what each benchmark is (image count and side length), so measured runs can be checked
against the set the paper scored. ``sources.csv`` states where each table's numbers come from (the paper or the
official README) and the evaluation protocol (an :mod:`evaluate.protocols` name, ``none`` for the user study)
they were measured with; :func:`load_reported` attaches both.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd

from misato.errors import MisatoError

REPORTED_TABLES: dict[str, str] = {
    "table1_misato512": "Table 1: MISATO@512, 2,000 images",
    "table2_mae": "Table 2: MAE prior, pre-trained (p.t.) vs fine-tuned (f.t.), MISATO@512",
    "table3_alignment": "Table 3: alignment module variants, MISATO@512",
    "table4_decoder": "Table 4: decoder variants, MISATO@512",
    "places2": "Places2 validation, 36,500 images",
    "user_study": "User study: percent of votes for consistency and quality (not image metrics)",
    "asuka_flux": "ASUKA-FLUX release: MISATO@512 and MISATO@1K",
    "clip_global": "Global CLIP scores of Table 1 (official README): MISATO@512 and Places2",
}
"""Table name → what it is (the CSV is ``results/reported/<name>.csv``)."""

TABLE_BENCHMARKS: dict[str, str] = {
    "table1_misato512": "MISATO@512",
    "table2_mae": "MISATO@512",
    "table3_alignment": "MISATO@512",
    "table4_decoder": "MISATO@512",
    "places2": "Places2",
}
"""Single-dataset table → the benchmark (a ``benchmarks.csv`` row) it was measured on; ``asuka_flux`` names the
benchmark in its ``dataset`` column, and the user study is not a measurement on a benchmark."""

NO_PROTOCOL = "none"
"""``sources.csv``'s protocol of a table that is not an image measurement (the user study)."""

DATASET_COLUMN = "dataset"


@dataclass(frozen=True)
class Benchmark:
    """An image set the paper reports numbers on: ``images`` pairs of ``resolution`` × ``resolution`` pixels."""

    name: str
    images: int
    resolution: int


def _open_data(file_name: str):
    return resources.files(__package__).joinpath("reported", file_name).open("r", encoding="utf-8")


def load_benchmarks() -> dict[str, Benchmark]:
    """Every benchmark of ``results/reported/benchmarks.csv`` by name."""
    with _open_data("benchmarks.csv") as handle:
        frame = pd.read_csv(handle, dtype={"benchmark": str, "images": int, "resolution": int})
    return {row.benchmark: Benchmark(row.benchmark, int(row.images), int(row.resolution)) for row in frame.itertuples()}


@dataclass(frozen=True)
class Source:
    """Where a reported table's numbers come from and the protocol they were measured with (None: no protocol)."""

    source: str
    protocol: str | None


def load_sources() -> dict[str, Source]:
    """Every table's :class:`Source` from ``results/reported/sources.csv``, by table name."""
    with _open_data("sources.csv") as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    return {row.table: Source(row.source, None if row.protocol == NO_PROTOCOL else row.protocol)
            for row in frame.itertuples()}


@dataclass(frozen=True)
class ReportedTable:
    """One reported table: ``values`` is indexed by method name, one float column per metric.

    ``benchmark`` is the image set the numbers were measured on (None for the user study); ``source`` says where
    they were printed and which protocol measured them.
    """

    name: str
    caption: str
    dataset: str | None
    values: pd.DataFrame
    benchmark: Benchmark | None
    source: Source

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.values.columns)

    def row(self, label: str) -> dict[str, float] | None:
        """The reported ``{metric: value}`` for the method named ``label`` (case-insensitive), or None."""
        for method in self.values.index:
            if method.casefold() == label.strip().casefold():
                return {metric: float(value) for metric, value in self.values.loc[method].items()}
        return None


def reported_table_names() -> tuple[str, ...]:
    """Every table name :func:`load_reported` accepts (without a ``:DATASET`` suffix)."""
    return tuple(REPORTED_TABLES)


def load_reported(name: str) -> ReportedTable:
    """Load the reported table ``name`` — ``"table1_misato512"``, or ``"asuka_flux:MISATO@1K"`` for one dataset.

    Raises :class:`MisatoError` for an unknown name, an unknown dataset, or a multi-dataset table loaded without
    choosing one.
    """
    table_name, _, dataset = name.partition(":")
    if table_name not in REPORTED_TABLES:
        raise MisatoError(f"unknown reported table {table_name!r}; choose one of: {', '.join(REPORTED_TABLES)}")
    with _open_data(f"{table_name}.csv") as handle:
        frame = pd.read_csv(handle, dtype={"method": str, DATASET_COLUMN: str})
    if DATASET_COLUMN in frame.columns:
        choices = list(dict.fromkeys(frame[DATASET_COLUMN]))
        chosen = [c for c in choices if c.casefold() == dataset.casefold()]
        if not chosen:
            raise MisatoError(
                f"reported table {table_name!r} covers several datasets; name one as "
                + " or ".join(f"'{table_name}:{c}'" for c in choices)
            )
        dataset = chosen[0]
        frame = frame[frame[DATASET_COLUMN] == dataset].drop(columns=DATASET_COLUMN)
    elif dataset:
        raise MisatoError(f"reported table {table_name!r} has a single dataset; drop the ':{dataset}' suffix")
    values = frame.set_index("method").astype(float)
    benchmark_name = dataset or TABLE_BENCHMARKS.get(table_name)
    benchmark = load_benchmarks()[benchmark_name] if benchmark_name else None
    source = load_sources()[table_name]
    return ReportedTable(table_name, REPORTED_TABLES[table_name], dataset or None, values, benchmark, source)
