"""Uncertainty for per-image metrics: percentile-bootstrap confidence intervals and paired tests.

All resampling draws from ``numpy.random.default_rng(seed)``: the same values, ``n_boot`` and seed give
bit-identical results. Image-set metrics (FID, U-IDS, P-IDS) have no per-image values and get no interval here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_INDICES_PER_CHUNK = 4_000_000
"""Bound on the resample index block held in memory (int64, ~32 MB)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate (the plain mean) with its percentile-bootstrap interval ``[lo, hi]``."""

    estimate: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        """``(hi - lo) / 2``: what tables print after ``±`` (the interval itself may be asymmetric)."""
        return (self.hi - self.lo) / 2


@dataclass(frozen=True)
class PairedTest:
    """Candidate minus baseline on the same ``n`` images.

    ``mean_difference`` is the mean of per-image differences, ``[lo, hi]`` its percentile-bootstrap interval;
    ``p_wilcoxon`` is the two-sided Wilcoxon signed-rank p-value (scipy defaults); ``p_bootstrap`` is the two-sided
    paired-bootstrap p-value for "mean difference = 0". The bootstrap fields are None when ``n_boot`` is 0.
    """

    n: int
    mean_difference: float
    lo: float | None
    hi: float | None
    p_wilcoxon: float
    p_bootstrap: float | None


def _as_columns(values: np.ndarray) -> np.ndarray:
    """``[n]`` or ``[n, k]`` finite floats → float64 ``[n, k]``; refuses empty and non-finite input."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"expected a non-empty [n] or [n, k] array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("values contain NaN or infinity")
    return array


def bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, over rows) of ``values``.

    Args:
        values: ``[n]`` or ``[n, k]`` finite numbers; the k columns share the same resampled rows.
        n_boot: number of resamples (>= 1).
        seed: seed of the ``numpy.random.Generator`` drawing the row indices.

    Returns:
        float64 ``[n_boot, k]``: row b is the column means of resample b.
    """
    columns = _as_columns(values)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _MAX_INDICES_PER_CHUNK // n)
    means = np.empty((n_boot, columns.shape[1]), dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        indices = rng.integers(0, n, size=(stop - start, n))
        for column in range(columns.shape[1]):
            means[start:stop, column] = columns[indices, column].mean(axis=1)
    return means


def percentile_interval(boot_stats: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The ``(lo, hi)`` percentiles (numpy's linear interpolation) of ``boot_stats [n_boot, k]`` along axis 0."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(boot_stats, [tail, 100 - tail], axis=0)
    return lo, hi


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> Interval:
    """Mean of ``values [n]`` with its percentile-bootstrap ``confidence`` interval."""
    columns = _as_columns(values)
    if columns.shape[1] != 1:
        raise ValueError("bootstrap_mean_ci takes a 1-D array; use bootstrap_means for several columns")
    lo, hi = percentile_interval(bootstrap_means(columns, n_boot, seed), confidence)
    return Interval(float(columns.mean()), float(lo[0]), float(hi[0]))


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``differences [n]`` (scipy defaults); 1.0 when all are zero."""
    differences = _as_columns(differences)[:, 0]
    if not differences.any():
        return 1.0
    import scipy.stats  # here, not at the top: it costs more than the rest of `misato compare` put together

    return float(scipy.stats.wilcoxon(differences).pvalue)


def paired_tests(
    baseline: np.ndarray, candidate: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[PairedTest]:
    """Compare ``candidate`` with ``baseline``, both ``[n]`` or ``[n, k]``, measured on the same n images (same order).

    One :class:`PairedTest` per column; the k columns share the bootstrap resamples. The bootstrap p-value
    resamples the centred differences (the null "mean difference = 0" imposed by shifting):
    ``p = (1 + #{b : |mean*_b - mean| >= |mean|}) / (n_boot + 1)``, so it is never exactly 0 and its resolution is
    ``1 / (n_boot + 1)``. The interval uses the same resamples, uncentred.
    """
    baseline = _as_columns(baseline)
    candidate = _as_columns(candidate)
    if baseline.shape != candidate.shape:
        raise ValueError(f"paired values differ in shape: {baseline.shape} vs {candidate.shape}")
    differences = candidate - baseline
    n, k = differences.shape
    means = differences.mean(axis=0)
    p_wilcoxon = [wilcoxon_p(differences[:, j]) for j in range(k)]
    if n_boot == 0:
        return [PairedTest(n, float(means[j]), None, None, p_wilcoxon[j], None) for j in range(k)]
    boot = bootstrap_means(differences, n_boot, seed)
    lo, hi = percentile_interval(boot, confidence)
    extreme = np.count_nonzero(np.abs(boot - means) >= np.abs(means), axis=0)
    return [
        PairedTest(n, float(means[j]), float(lo[j]), float(hi[j]), p_wilcoxon[j], (1 + int(extreme[j])) / (n_boot + 1))
        for j in range(k)
    ]


def paired_test(
    baseline: np.ndarray, candidate: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> PairedTest:
    """:func:`paired_tests` for one metric: ``baseline [n]`` and ``candidate [n]``."""
    if np.ndim(baseline) != 1 or np.ndim(candidate) != 1:
        raise ValueError("paired_test takes 1-D arrays; use paired_tests for several columns")
    return paired_tests(baseline, candidate, n_boot, seed, confidence)[0]
