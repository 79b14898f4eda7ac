"""The run folder: what ``misato evaluate --out RUN`` writes and ``misato compare`` reads, defined once.

A run folder holds three files:

- :data:`PER_IMAGE_CSV` (``per_image.csv``): one row per image, columns :data:`PER_IMAGE_COLUMNS` (``name``, the
  per-image metrics that were computed, ``mask_ratio`` in [0, 1], ``domain``), rows sorted by name.
- :data:`SUMMARY_CSV` (``summary.csv``): columns :data:`SUMMARY_CSV_COLUMNS` then the metrics; one ``all`` row,
  then one row per breakdown group (``group`` is a key of :data:`BREAKDOWNS`, ``subset`` the group's label).
- :data:`SUMMARY_JSON` (``summary.json``), written last, so its presence marks a finished run. Its keys are the
  ``SUMMARY_*`` constants below; ``metrics`` maps metric name → value (only the computed ones), each breakdown maps
  group label → ``{"n": images, metric: value, ...}``.

Mask-ratio groups are the bins :data:`MASK_RATIO_BINS` labelled by :func:`mask_ratio_bin`
(:data:`MASK_RATIO_LABELS` in order); domain groups are :data:`misato.layout.DOMAINS` names.
"""
from __future__ import annotations

from evaluate.metric_info import ALL_METRICS, METRICS

PER_IMAGE_CSV = "per_image.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
RUN_FILES = (PER_IMAGE_CSV, SUMMARY_CSV, SUMMARY_JSON)
"""Every file of a run folder, in the order they are written."""

NAME_COLUMN = "name"
MASK_RATIO_COLUMN = "mask_ratio"
DOMAIN_COLUMN = "domain"
PER_IMAGE_METRICS: tuple[str, ...] = tuple(m for m in ALL_METRICS if METRICS[m].per_image)
"""Metrics with one value per image (a ``per_image.csv`` column each), in table order."""
PER_IMAGE_COLUMNS: tuple[str, ...] = (NAME_COLUMN, *PER_IMAGE_METRICS, MASK_RATIO_COLUMN, DOMAIN_COLUMN)
"""Every ``per_image.csv`` column in file order; a run writes the metric columns it computed."""

SUMMARY_CSV_COLUMNS = ("group", "subset", "n")
"""The leading ``summary.csv`` columns (the metrics follow in table order)."""
SUMMARY_ALL_GROUP = "all"
"""``group`` and ``subset`` of the ``summary.csv`` row over every image."""

SUMMARY_METRICS = "metrics"
SUMMARY_N = "n"
SUMMARY_METHOD = "method"
SUMMARY_PROTOCOL = "protocol"
SUMMARY_WEIGHTS = "weights"
"""Weights registry name → sha256 of the file used."""
SUMMARY_VERSION = "version"
SUMMARY_IMAGE_SIZES = "image_sizes"
"""The distinct ``[height, width]`` of the ground-truth images, sorted (absent in runs of older versions)."""
SUMMARY_SOFT_MASKS = "soft_masks"
"""How many masks have grey values (strictly between 0 and 255): Grad uses them, every other metric binarises."""
SUMMARY_MASKS_WITHOUT_HOLE = "masks_without_hole"
"""How many masks have no hole pixel (their images count PSNR 70, SSIM 1, LPIPS 0, Grad 0 in the means)."""

BREAKDOWNS = {"domain": "by_domain", "mask_ratio": "by_mask_ratio"}
"""Breakdown name (``summary.csv``'s ``group``, ``misato compare --by``) → its ``summary.json`` key."""
BREAKDOWN_N = "n"
"""The image count in each breakdown entry."""

MASK_RATIO_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
"""Bin edges of the hole fraction; the last bin is open (``0.6`` and above)."""


def mask_ratio_bin(ratio: float) -> str:
    """``0.234`` → ``"20-30%"``; the last bin is ``"60%+"``."""
    for low, high in zip(MASK_RATIO_BINS, MASK_RATIO_BINS[1:]):
        if ratio < high:
            return f"{int(low * 100)}-{int(high * 100)}%"
    return f"{int(MASK_RATIO_BINS[-1] * 100)}%+"


MASK_RATIO_LABELS: tuple[str, ...] = tuple(mask_ratio_bin(low) for low in MASK_RATIO_BINS)
"""Every mask-ratio group label in increasing order: ``"0-10%"`` … ``"50-60%"``, ``"60%+"``."""
