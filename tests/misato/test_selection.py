"""Representative selection: a deterministic function of the features, whatever sklearn's centre dtype.

This module needs only numpy, scikit-learn and the builder's light imports: `.ci/run` also runs it in a second
environment with the lowest supported numpy / scikit-learn, so a library release cannot silently change a build.
"""
from __future__ import annotations

import numpy as np
import pytest

from misato.build.selection import TIE_TOLERANCE, rank_with_ties, select_representatives
from misato.errors import MisatoError


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def clustered_features(seed: int = 7, n: int = 90, dim: int = 24) -> np.ndarray:
    """Blobs of unequal size around random directions (the shape of CLIP features of one domain)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim))
    assignment = rng.integers(0, 12, size=n)
    return unit_rows(centres[assignment] + 0.35 * rng.standard_normal((n, dim)))


def independent_choice(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> list[int]:
    """The documented rule written out directly: float64 member mean, cosine distance, ties → smaller position."""
    chosen = []
    for k in range(n_clusters):
        members = [int(p) for p in np.flatnonzero(labels == k)]
        centre = np.mean([features[p].astype(np.float64) for p in members], axis=0)
        centre /= np.linalg.norm(centre)
        distance = {p: 1.0 - float(np.dot(features[p].astype(np.float64), centre)) for p in members}
        best = min(distance.values())
        chosen.append(min(p for p in members if distance[p] <= best + TIE_TOLERANCE))
    return sorted(chosen)


def test_selection_follows_the_documented_rule_on_sklearn_labels():
    from sklearn.cluster import BisectingKMeans

    features = clustered_features()
    labels = BisectingKMeans(n_clusters=20, random_state=0).fit(features).labels_
    ours = select_representatives(features, 20, seed=0)
    assert [r.position for r in ours] == independent_choice(features, labels, 20)
    assert all(r.candidates[0] == r.position for r in ours)
    assert sorted(p for r in ours for p in r.candidates) == list(range(len(features)))


# Positions chosen for clustered_features() with 20 clusters, seed 0. The same with the lowest and the newest
# supported numpy / scikit-learn (.ci/run checks the lowest); a change here changes every MISATO build.
GOLDEN_POSITIONS = [0, 4, 14, 22, 24, 25, 27, 29, 34, 41, 42, 47, 65, 66, 71, 72, 77, 83, 85, 89]


def test_selection_is_the_same_on_every_supported_library_version():
    positions = [r.position for r in select_representatives(clustered_features(), 20, seed=0)]
    assert positions == GOLDEN_POSITIONS


@pytest.mark.parametrize("centre_dtype", [np.float32, np.float64])
def test_two_member_cluster_tie_does_not_follow_rounding(centre_dtype):
    """Both members of a two-member cluster are equidistant from its mean: the smaller position must win,
    whether the centre arrives rounded to float32 or float64, and whichever member rounding favours."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        pair = unit_rows(rng.standard_normal((2, 768)))
        centre = pair.astype(np.float64).mean(axis=0).astype(centre_dtype).astype(np.float64)
        raw = 1.0 - pair.astype(np.float64) @ (centre / np.linalg.norm(centre))
        assert abs(raw[0] - raw[1]) < TIE_TOLERANCE  # a tie up to rounding noise
        ranked, _ = rank_with_ties(np.array([5, 9]), raw)
        assert ranked.tolist() == [5, 9]
        ranked, _ = rank_with_ties(np.array([9, 5]), raw)
        assert ranked.tolist() == [5, 9]
        chosen = select_representatives(pair, 1, seed=0)
        assert chosen[0].position == 0 and chosen[0].candidates == (0, 1)


def test_rank_with_ties_orders_distinct_distances_and_groups_near_ties():
    positions = np.array([4, 1, 7, 3])
    distances = np.array([0.30, 0.10, 0.10 + TIE_TOLERANCE / 2, 0.20])
    ranked, ranked_distances = rank_with_ties(positions, distances)
    assert ranked.tolist() == [1, 7, 3, 4]
    assert ranked_distances.tolist() == [0.10, 0.10 + TIE_TOLERANCE / 2, 0.20, 0.30]
    ranked, _ = rank_with_ties(np.array([7, 1]), np.array([0.10, 0.10 + TIE_TOLERANCE / 2]))
    assert ranked.tolist() == [1, 7]  # within tolerance: the smaller position first even though farther
    ranked, _ = rank_with_ties(np.array([7, 1]), np.array([0.10, 0.10 + 3 * TIE_TOLERANCE]))
    assert ranked.tolist() == [7, 1]  # beyond tolerance: distance decides


def test_selection_ties_and_errors():
    features = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]]  # duplicates: exact ties inside clusters
    chosen = select_representatives(features, 3, seed=0)
    assert sorted(r.position for r in chosen) == [0, 2, 4]
    with pytest.raises(MisatoError, match="domain 'indoor': 5 usable images, but 6"):
        select_representatives(features, 6, seed=0, domain="indoor")


def test_as_many_clusters_as_images_keeps_every_image():
    features = clustered_features(n=6)
    chosen = select_representatives(features, 6, seed=0)
    assert [r.position for r in chosen] == list(range(6))
    assert all(r.distance_to_centre == pytest.approx(0.0, abs=1e-6) for r in chosen)
