"""Bootstrap intervals and paired tests against independent computations (normal theory, scipy, brute force)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats

from evaluate.stats import (
    bootstrap_mean_ci,
    bootstrap_means,
    paired_test,
    paired_tests,
    percentile_interval,
    wilcoxon_p,
)


def test_bootstrap_ci_is_close_to_the_normal_theory_interval():
    values = np.random.default_rng(3).normal(10.0, 2.0, size=400)
    interval = bootstrap_mean_ci(values, n_boot=20_000, seed=0)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert interval.estimate == pytest.approx(values.mean(), abs=1e-12)
    # The bootstrap uses the plug-in (ddof=0) spread and Monte-Carlo percentiles: agree within ~3% of the width.
    assert interval.lo == pytest.approx(values.mean() - half, abs=0.03 * half)
    assert interval.hi == pytest.approx(values.mean() + half, abs=0.03 * half)
    assert interval.half_width == pytest.approx(half, rel=0.03)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    values = np.random.default_rng(5).exponential(1.0, size=150)  # skewed: the interval is asymmetric
    ours = bootstrap_mean_ci(values, n_boot=20_000, seed=1)
    theirs = scipy.stats.bootstrap(
        (values,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    width = theirs.high - theirs.low
    assert ours.lo == pytest.approx(theirs.low, abs=0.03 * width)
    assert ours.hi == pytest.approx(theirs.high, abs=0.03 * width)
    assert ours.hi - ours.estimate > ours.estimate - ours.lo  # right-skewed data, right-skewed interval


def test_bootstrap_means_match_a_brute_force_loop_with_the_same_generator():
    values = np.random.default_rng(0).normal(size=(37, 2))
    rng = np.random.default_rng(11)
    expected = np.array([values[rng.integers(0, 37, size=37)].mean(axis=0) for _ in range(5)])
    np.testing.assert_allclose(bootstrap_means(values, 5, seed=11), expected, rtol=0, atol=1e-15)


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    values = np.random.default_rng(0).uniform(size=200)
    first = bootstrap_means(values, 300, seed=7)
    assert np.array_equal(first, bootstrap_means(values.copy(), 300, seed=7))
    assert not np.array_equal(first, bootstrap_means(values, 300, seed=8))
    assert bootstrap_mean_ci(values, 300, seed=7) == bootstrap_mean_ci(values, 300, seed=7)


def test_chunking_does_not_change_results(monkeypatch):
    import evaluate.stats as stats

    values = np.random.default_rng(0).uniform(size=50)
    whole = bootstrap_means(values, 40, seed=3)
    monkeypatch.setattr(stats, "_MAX_INDICES_PER_CHUNK", 50 * 7)  # 7 resamples per chunk, last chunk partial
    chunked = bootstrap_means(values, 40, seed=3)
    # Each chunk draws a fresh [rows, n] block; rows × n is even here so no buffered draw is split.
    np.testing.assert_array_equal(whole, chunked)


def test_percentile_interval_uses_numpy_linear_percentiles():
    stats = np.arange(101, dtype=float)[:, None]
    lo, hi = percentile_interval(stats, 0.5)
    assert (lo[0], hi[0]) == (25.0, 75.0)
    lo, hi = percentile_interval(np.array([[0.0], [1.0]]), 0.5)
    assert (lo[0], hi[0]) == (0.25, 0.75)
    with pytest.raises(ValueError):
        percentile_interval(stats, 1.0)


def test_wilcoxon_p_equals_scipy_called_directly():
    rng = np.random.default_rng(4)
    for n in (12, 80, 500):  # exact and normal-approximation regimes
        baseline = rng.normal(size=n)
        candidate = baseline + rng.normal(0.15, 1.0, size=n)
        result = paired_test(baseline, candidate, n_boot=200, seed=0)
        assert result.p_wilcoxon == scipy.stats.wilcoxon(candidate, baseline).pvalue
        assert result.p_wilcoxon == wilcoxon_p(candidate - baseline)


def test_paired_difference_interval_and_bootstrap_p():
    rng = np.random.default_rng(9)
    baseline = rng.normal(20, 3, size=300)
    shifted = baseline + 0.5 + rng.normal(0, 1, size=300)
    result = paired_test(baseline, shifted, n_boot=4000, seed=0)
    differences = shifted - baseline
    assert result.n == 300
    assert result.mean_difference == pytest.approx(differences.mean(), abs=1e-12)
    half = 1.96 * differences.std(ddof=1) / np.sqrt(300)
    assert result.lo == pytest.approx(differences.mean() - half, abs=0.05 * half)
    assert result.hi == pytest.approx(differences.mean() + half, abs=0.05 * half)
    assert result.p_bootstrap == 1 / 4001  # no resample crosses zero: the smallest p this B can give

    # For a small effect the bootstrap p tracks the paired t-test p-value.
    noise = np.random.default_rng(10).normal(0, 1, size=300)
    noise -= noise.mean() - 0.05  # a small effect: p in the informative middle range
    mid = paired_test(baseline, baseline + noise, n_boot=20_000, seed=0)
    assert mid.p_bootstrap == pytest.approx(scipy.stats.ttest_rel(baseline + noise, baseline).pvalue, abs=0.03)


def test_identical_values_give_zero_difference_and_p_one():
    values = np.linspace(0, 1, 30)
    result = paired_test(values, values.copy(), n_boot=100, seed=0)
    assert (result.mean_difference, result.lo, result.hi) == (0.0, 0.0, 0.0)
    assert result.p_wilcoxon == 1.0 and result.p_bootstrap == 1.0


def test_no_bootstrap_leaves_interval_and_bootstrap_p_empty():
    rng = np.random.default_rng(0)
    result = paired_test(rng.normal(size=20), rng.normal(size=20), n_boot=0)
    assert result.lo is None and result.hi is None and result.p_bootstrap is None
    assert 0 < result.p_wilcoxon <= 1


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf, 1.0])])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        bootstrap_mean_ci(bad, 10)


def test_paired_lengths_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        paired_test(np.zeros(3), np.zeros(4))


def test_paired_tests_on_columns_equal_one_column_at_a_time():
    rng = np.random.default_rng(2)
    baseline = rng.normal(size=(60, 3))
    candidate = baseline + rng.normal(0.1, 1.0, size=(60, 3))
    together = paired_tests(baseline, candidate, n_boot=300, seed=5)
    for j, joint in enumerate(together):
        alone = paired_test(baseline[:, j], candidate[:, j], n_boot=300, seed=5)
        # Same resampled rows; means of a column vs a 1-D array may differ in the last bit (summation order).
        assert dataclasses.astuple(joint) == pytest.approx(dataclasses.astuple(alone), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="1-D"):
        paired_test(baseline, candidate)
