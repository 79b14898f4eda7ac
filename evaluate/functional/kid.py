"""Kernel Inception Distance (Bińkowski et al. 2018) on feature sets, as torch-fidelity computes it.

KID is the unbiased estimate of MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``
(d = feature width), averaged over random subsets: each of ``subsets`` draws ``subset_size`` real rows and then
``subset_size`` fake rows without replacement, from one ``numpy.random.RandomState(seed)``
(``rng.choice(n, subset_size, replace=False)``) — the same draws as torch-fidelity's
``kid_features_to_metric`` with ``rng_seed=seed`` (its default seed is 2020, ours 0). For one subset of m rows,

    MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m².

The result is the mean and the population standard deviation (``np.std``) over subsets. Lower is better; the
unbiased estimate can be slightly negative for sets from one distribution.

Computation: everything in float64 (torch-fidelity keeps its inputs' dtype, float32 for its extractors). When
the three full kernel matrices are small (at most :data:`GRAM_MAX_ENTRIES` entries) and cheaper than the
per-subset ones, they are computed once and each subset's sums are read from them (``vᵀ K v`` with the
subset's indicator vector ``v``); otherwise each subset's kernel blocks are computed as torch-fidelity does. The
two routes agree to float64 rounding; which one runs depends only on the sizes, so a seed gives bit-identical
results.
"""
from __future__ import annotations

import numpy as np

from misato.errors import MisatoError

GRAM_MAX_ENTRIES = 1 << 25
"""Largest N² + M² + N·M (float64 entries, 256 MB) for which the full kernel matrices are computed once."""
_SUBSET_CHUNK = 128  # subsets whose indicator vectors are multiplied with a kernel matrix at once


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x yᵀ / d + 1)³`` for ``x [N, d]``, ``y [M, d]`` → float64 ``[N, M]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _check(real, fake, subsets: int, subset_size: int) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise MisatoError(f"KID needs real [N, D] and fake [M, D] features, got shapes {real.shape} and {fake.shape}")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise MisatoError("KID features contain NaN or infinite values")
    if subsets < 1:
        raise MisatoError(f"--kid-subsets must be at least 1, got {subsets}")
    if subset_size < 2:
        raise MisatoError(
            f"--kid-subset-size must be at least 2 (the unbiased estimate needs pairs), got {subset_size}"
        )
    if subset_size > min(len(real), len(fake)):
        raise MisatoError(
            f"--kid-subset-size {subset_size} is larger than the sets (real {len(real)}, fake {len(fake)} images); "
            f"pass --kid-subset-size {min(len(real), len(fake))} or less"
        )
    return real, fake


def _mmd2(sum_xx, trace_xx, sum_yy, trace_yy, sum_xy, m: int):
    """Unbiased MMD² from the kernel sums of a subset (full sums and traces of K_XX, K_YY; full sum of K_XY)."""
    return (sum_xx - trace_xx + sum_yy - trace_yy) / (m * (m - 1)) - 2.0 * sum_xy / (m * m)


def _indicator_sums(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``Σ_{i∈rows_s, j∈cols_s} kernel[i, j]`` for each subset s (rows, cols: [S, m] index arrays)."""
    sums = np.empty(len(rows))
    for start in range(0, len(rows), _SUBSET_CHUNK):
        r, c = rows[start : start + _SUBSET_CHUNK], cols[start : start + _SUBSET_CHUNK]
        left = np.zeros((len(r), kernel.shape[0]))
        right = np.zeros((len(c), kernel.shape[1]))
        np.put_along_axis(left, r, 1.0, axis=1)
        np.put_along_axis(right, c, 1.0, axis=1)
        sums[start : start + len(r)] = np.einsum("sj,sj->s", left @ kernel, right)
    return sums


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID between feature sets ``real [N, D]`` and ``fake [M, D]``: ``(mean, std)`` of MMD²ᵤ over subsets.

    Args:
        real, fake: feature rows (any float dtype; computed in float64). N and M may differ.
        subsets: number of random subsets (torch-fidelity default 100).
        subset_size: rows per subset and set, 2 ≤ subset_size ≤ min(N, M) (torch-fidelity default 1000).
        seed: seed of the ``numpy.random.RandomState`` drawing the subsets.
    Returns:
        ``(mean, std)`` as floats; the same inputs and seed give bit-identical results.
    Raises:
        MisatoError: bad shapes or non-finite features, or a subset size outside [2, min(N, M)] (the message names
        ``--kid-subset-size`` and the largest usable value; the caller decides whether to pass a smaller one).
    """
    real, fake = _check(real, fake, subsets, subset_size)
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(real), subset_size, replace=False), rng.choice(len(fake), subset_size, replace=False))
             for _ in range(subsets)]
    n, m = len(real), len(fake)
    full = n * n + m * m + n * m
    if full <= GRAM_MAX_ENTRIES and full <= 3 * subsets * subset_size**2:
        rows = np.stack([a for a, _ in draws])
        cols = np.stack([b for _, b in draws])
        k_xx, k_yy, k_xy = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
        diag_xx, diag_yy = np.diagonal(k_xx), np.diagonal(k_yy)
        mmds = _mmd2(
            _indicator_sums(k_xx, rows, rows), diag_xx[rows].sum(axis=1),
            _indicator_sums(k_yy, cols, cols), diag_yy[cols].sum(axis=1),
            _indicator_sums(k_xy, rows, cols), subset_size,
        )
    else:
        mmds = np.empty(subsets)
        for index, (a, b) in enumerate(draws):
            x, y = real[a], fake[b]
            k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
            mmds[index] = _mmd2(k_xx.sum(), np.trace(k_xx), k_yy.sum(), np.trace(k_yy),
                                polynomial_kernel(x, y).sum(), subset_size)
    return float(np.mean(mmds)), float(np.std(mmds))
