"""Hole-ratio and connected-component statistics of any mask folder (255 = hole PNGs).

Use it on the official MISATO release (``ROOT/mask``) to calibrate ``--ratio-range``, and on generated
folders to check them. When the folder holds a ``masks.csv`` from ``misato masks``, statistics are also
given per kind combination (``object+comod`` …).
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from misato.errors import MisatoError
from misato.io import atomic_write_text, list_images, preview_names, read_mask
from misato.masks.base import hole_ratio
from misato.masks.generate import CSV_NAME

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BIN_EDGES = np.linspace(0.0, 1.0, 11)
"""Ten 10 % bins of hole ratio; the last bin includes 1.0."""


def hole_components(mask: np.ndarray) -> int:
    """Number of 8-connected hole regions of a boolean mask."""
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(count) - 1


def summarize(ratios: np.ndarray, components: np.ndarray) -> dict[str, Any]:
    """Count, mean/std/quantiles and 10 % histogram of ``ratios``; mean/median/max of ``components``."""
    histogram, _ = np.histogram(ratios, bins=BIN_EDGES)
    return {
        "count": int(ratios.size),
        "ratio_mean": float(ratios.mean()),
        "ratio_std": float(ratios.std()),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
        "ratio_quantiles": {f"q{int(q * 100):02d}": float(np.quantile(ratios, q)) for q in QUANTILES},
        "ratio_histogram": {f"{lo:.0%}-{hi:.0%}": int(c) for lo, hi, c in zip(BIN_EDGES[:-1], BIN_EDGES[1:], histogram)},
        "components_mean": float(components.mean()),
        "components_median": float(np.median(components)),
        "components_max": int(components.max()),
    }


def _kinds_by_name(folder: Path, names: list[str]) -> dict[str, str] | None:
    """``{mask name: kinds}`` from the folder's ``masks.csv``, or None (with a warning saying why) when it is
    absent or does not list every mask.

    Raises:
        MisatoError: ``masks.csv`` is not a UTF-8 text file.
    """
    path = folder / CSV_NAME
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise MisatoError(f"{path}: not a masks.csv of `misato masks` ({error.__class__.__name__}: it is not a "
                          "UTF-8 CSV table); remove it or write the folder again") from None
    rows = {row["name"]: row["kinds"] for row in table if row.get("name") and row.get("kinds")}
    unlisted = [name for name in names if name not in rows]
    if unlisted:
        warnings.warn(f"{path} does not list {len(unlisted)} of the {len(names)} masks ({preview_names(unlisted, 5)}): "
                      "per-kind statistics are left out", stacklevel=3)
        return None
    return rows


def mask_stats(folder: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """Statistics of every mask image in ``folder``.

    Returns:
        ``{"folder", "size_counts", "all": summary, "per_kind": {kinds: summary} | {}}``; each summary as in
        :func:`summarize` (ratios in [0, 1]).
    Raises:
        MisatoError: missing folder or no mask files (or an unreadable mask).
    """
    from tqdm import tqdm

    folder = Path(folder)
    files = list_images(folder, what="mask")
    names = sorted(files)
    ratios, components, sizes = np.empty(len(names)), np.empty(len(names), np.int64), {}
    for i, name in enumerate(tqdm(names, desc="mask-stats", unit="mask", disable=not progress)):
        mask = read_mask(files[name])
        ratios[i], components[i] = hole_ratio(mask), hole_components(mask)
        key = f"{mask.shape[1]}x{mask.shape[0]}"
        sizes[key] = sizes.get(key, 0) + 1
    result: dict[str, Any] = {"folder": str(folder), "size_counts": sizes, "all": summarize(ratios, components),
                              "per_kind": {}}
    kinds = _kinds_by_name(folder, names)
    if kinds is not None:
        labels = np.array([kinds[name] for name in names])
        for label in sorted(set(labels)):
            chosen = labels == label
            result["per_kind"][label] = summarize(ratios[chosen], components[chosen])
    return result


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`mask_stats` output (one row per group, histogram in % of masks)."""
    groups = {"all": stats["all"], **stats["per_kind"]}
    bins = list(stats["all"]["ratio_histogram"])
    lines = [f"{stats['folder']}: {stats['all']['count']} masks, sizes {stats['size_counts']}",
             f"{'group':28} {'n':>6} {'mean':>6} {'q05':>6} {'q25':>6} {'q50':>6} {'q75':>6} {'q95':>6} {'cc':>5}"]
    for label, s in groups.items():
        q = s["ratio_quantiles"]
        lines.append(f"{label:28} {s['count']:6d} {s['ratio_mean']:6.3f} {q['q05']:6.3f} {q['q25']:6.3f} "
                     f"{q['q50']:6.3f} {q['q75']:6.3f} {q['q95']:6.3f} {s['components_mean']:5.1f}")
    lines.append("")
    lines.append(f"{'% of masks per ratio bin':28} " + " ".join(f"{b:>8}" for b in bins))
    for label, s in groups.items():
        lines.append(f"{label:28} " + " ".join(f"{100 * c / s['count']:8.1f}" for c in s["ratio_histogram"].values()))
    return "\n".join(lines)


def check_stats_path(path: str | os.PathLike) -> None:
    """Refuse a :func:`write_stats` file name that is neither ``.json`` nor ``.csv`` (checked before the masks
    are read)."""
    if Path(path).suffix.lower() not in (".json", ".csv"):
        raise MisatoError(f"--out {path}: use a .json or .csv file name")


def write_stats(stats: dict[str, Any], path: str | os.PathLike) -> None:
    """Save :func:`mask_stats` output as JSON (``.json``) or one CSV row per group (``.csv``)."""
    check_stats_path(path)
    path = Path(path)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(stats, indent=2))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    bins = list(stats["all"]["ratio_histogram"])
    quantiles = list(stats["all"]["ratio_quantiles"])
    writer.writerow(["group", "count", "ratio_mean", "ratio_std", "ratio_min", "ratio_max", *quantiles,
                     *[f"hist_{b}" for b in bins], "components_mean", "components_median", "components_max"])
    for label, s in {"all": stats["all"], **stats["per_kind"]}.items():
        writer.writerow([label, s["count"], s["ratio_mean"], s["ratio_std"], s["ratio_min"], s["ratio_max"],
                         *s["ratio_quantiles"].values(), *s["ratio_histogram"].values(),
                         s["components_mean"], s["components_median"], s["components_max"]])
    atomic_write_text(path, buffer.getvalue())
