"""KID against torch-fidelity's own implementation, a hand-computed case, identical sets, determinism, errors."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from evaluate.functional import kid
from misato.errors import MisatoError


def features(seed: int, n: int, d: int = 64, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated rows like pooled CNN features: ``float32 [n, d]``."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)
    return np.abs(rng.normal(size=(n, d)) @ mixing + shift).astype(np.float32)


def torch_fidelity_kid(real, fake, subsets, subset_size, seed):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = kid_features_to_metric(
        torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64)),
        kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=seed, verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


@pytest.fixture(params=["kernel matrices once", "per subset"])
def route(request, monkeypatch):
    if request.param == "per subset":
        # the module, not the function `evaluate.functional.kid` exports under the same name
        monkeypatch.setattr(importlib.import_module("evaluate.functional.kid"), "GRAM_MAX_ENTRIES", 0)
    return request.param


@pytest.mark.parametrize("seed", [0, 2020])
def test_matches_torch_fidelity(route, seed):
    real, fake = features(0, 300), features(1, 250, shift=0.5)
    ours = kid(real, fake, subsets=20, subset_size=100, seed=seed)
    reference = torch_fidelity_kid(real, fake, 20, 100, seed)
    np.testing.assert_allclose(ours, reference, rtol=1e-10)
    assert ours[0] > 3 * ours[1] > 0  # shifted sets: clearly positive, and the subsets differ


def test_full_set_unbiased_estimate_matches_torch_fidelity(route):
    real, fake = features(2, 120), features(3, 120, shift=0.5)
    mean, std = kid(real, fake, subsets=3, subset_size=120)
    np.testing.assert_allclose(mean, torch_fidelity_kid(real, fake, 1, 120, 0)[0], rtol=1e-12)
    assert std < 1e-12 * mean  # every subset is the whole set, permuted


def test_hand_computed_three_points(route):
    # d = 2, k(x, y) = (x·y / 2 + 1)^3.  X: dot products 0, 1, 1 off the diagonal -> k = 1, 27/8, 27/8, so
    # sum_{i!=j} k(x_i, x_j) = 2 (1 + 27/8 + 27/8) = 31/2.  Y: all dot products 0 -> sum_{i!=j} = 6.
    # X·Y: four products of 2 (k = 8), five of 0 (k = 1) -> 37.
    # MMD² = (31/2) / 6 + 6 / 6 - 2 · 37 / 9 = -167/36.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    mean, std = kid(x, y, subsets=4, subset_size=3)
    assert mean == pytest.approx(-167 / 36, rel=1e-14) and std < 1e-14
    # two points: X {(1,0), (1,1)}, Y {(0,0), (2,0)}: K_XX off 27/8, K_YY off 1, K_XY 1 + 8 + 1 + 8
    mean, _ = kid(x[[0, 2]], y[:2], subsets=2, subset_size=2)
    assert mean == pytest.approx((2 * 27 / 8 + 2) / 2 - 2 * 18 / 4, rel=1e-14)


def test_identical_sets_are_near_zero(route):
    """Whole identical sets: MMD²ᵤ = −(2/m)(mean k(x, x) − mean_{i≠j} k(xᵢ, xⱼ)), which vanishes like 1/m."""
    real = features(4, 400)
    values = {}
    for m in (100, 400):
        kernel = (real[:m].astype(np.float64) @ real[:m].T.astype(np.float64) / real.shape[1] + 1) ** 3
        mean_diag, mean_off = np.trace(kernel) / m, (kernel.sum() - np.trace(kernel)) / (m * (m - 1))
        values[m], std = kid(real[:m], real[:m], subsets=2, subset_size=m)
        np.testing.assert_allclose(values[m], -2 / m * (mean_diag - mean_off), rtol=1e-10)
        assert std < 1e-12
    assert 3 < values[100] / values[400] < 5


def test_deterministic_for_a_seed_and_n_m_may_differ():
    real, fake = features(5, 150), features(6, 90, shift=0.2)
    first = kid(real, fake, subsets=10, subset_size=50, seed=3)
    assert kid(real.copy(), fake.copy(), subsets=10, subset_size=50, seed=3) == first
    assert kid(real, fake, subsets=10, subset_size=50, seed=4) != first
    assert isinstance(first[0], float) and isinstance(first[1], float)


def test_bad_inputs_are_clear_errors():
    real, fake = features(7, 50), features(8, 40)
    too_large = r"--kid-subset-size 1000 is larger than the sets \(real 50, fake 40.*--kid-subset-size 40"
    with pytest.raises(MisatoError, match=too_large):
        kid(real, fake)
    with pytest.raises(MisatoError, match="at least 2"):
        kid(real, fake, subset_size=1)
    with pytest.raises(MisatoError, match="--kid-subsets must be at least 1"):
        kid(real, fake, subsets=0, subset_size=10)
    with pytest.raises(MisatoError, match=r"real \[N, D\] and fake \[M, D\]"):
        kid(real, fake[:, :10], subset_size=10)
    fake[0, 0] = np.nan
    with pytest.raises(MisatoError, match="NaN"):
        kid(real, fake, subset_size=10)
