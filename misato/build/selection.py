"""Choosing the representatives of a domain: BisectingKMeans on CLIP features, one image per cluster."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from misato.errors import MisatoError


@dataclass(frozen=True)
class Representative:
    """The image chosen for one cluster.

    Attributes:
        position: index of the chosen image in the feature matrix given to :func:`select_representatives`.
        cluster_id: sklearn's cluster label.
        cluster_size: number of members of the cluster.
        distance_to_centre: ``1 - cos(feature, centre)`` of the chosen member, centre = float64 mean of the
            cluster's members (0 = on the centre's direction).
        candidates: every member's position, nearest to the centre first (ties within TIE_TOLERANCE: smaller
            position first); the builder falls back to later ones when a COCO image admits no background mask.
    """

    position: int
    cluster_id: int
    cluster_size: int
    distance_to_centre: float
    candidates: tuple[int, ...]


#: Two members whose cosine distances to the centre differ by at most this much are tied, and the smaller position
#: wins. Float32 features put rounding noise of ~1e-7 on these distances; a two-member cluster's members are exactly
#: equidistant from its mean, so without a tolerance the choice would follow rounding (and the library version).
TIE_TOLERANCE = 1e-6


def select_representatives(features: np.ndarray, n_clusters: int, seed: int, domain: str = "domain") -> list[Representative]:
    """Cluster ``features`` with ``BisectingKMeans(n_clusters, random_state=seed)`` and pick each centre's image.

    Only sklearn's labels are used: each centre is recomputed in float64 as the mean of its members, members are
    scored by float64 cosine distance to it, and distances within :data:`TIE_TOLERANCE` of each other are ties
    broken by the smaller position. The choice is thus a function of the features and the labels alone, not of
    the dtype or rounding of sklearn's ``cluster_centers_`` (float32 since scikit-learn 1.9).

    Args:
        features: ``float32 [N, D]``, rows L2-normalised (N images of one domain, in sorted source order).
        n_clusters: how many representatives (the per-domain count).
        seed: ``random_state`` of the clustering.
        domain: named in the error message.
    Returns:
        One :class:`Representative` per cluster, ordered by the chosen image's position (so the output order
        follows the sorted source paths, independent of sklearn's label numbering).
    Raises:
        MisatoError: fewer images than clusters.
    """
    features = np.asarray(features, dtype=np.float32)
    if len(features) < n_clusters:
        raise MisatoError(
            f"domain {domain!r}: {len(features)} usable images, but {n_clusters} representatives were asked for; "
            "add images or lower --per-domain"
        )
    if n_clusters == len(features):
        labels = np.arange(len(features))
    else:
        from sklearn.cluster import BisectingKMeans

        labels = BisectingKMeans(n_clusters=n_clusters, random_state=seed).fit(features).labels_
    chosen = []
    for cluster_id in range(n_clusters):
        members = np.flatnonzero(labels == cluster_id)
        member_features = features[members].astype(np.float64)
        centre = member_features.mean(axis=0)
        norm = np.linalg.norm(centre)
        distances = 1.0 - member_features @ (centre / norm if norm > 0 else centre)
        ranked, ranked_distances = rank_with_ties(members, distances)
        chosen.append(
            Representative(
                position=int(ranked[0]),
                cluster_id=cluster_id,
                cluster_size=len(members),
                distance_to_centre=float(ranked_distances[0]),
                candidates=tuple(int(p) for p in ranked),
            )
        )
    return sorted(chosen, key=lambda representative: representative.position)


def rank_with_ties(positions: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order ``positions`` nearest first, treating distances within :data:`TIE_TOLERANCE` of the nearest as ties.

    Repeatedly takes, among the remaining members whose distance is within the tolerance of the smallest remaining
    distance, the one with the smallest position.

    Args:
        positions: ``int [K]`` member positions.
        distances: ``float64 [K]`` their distances to the centre.
    Returns:
        ``(positions, distances)`` both reordered.
    """
    remaining = np.ones(len(positions), dtype=bool)
    order = []
    for _ in range(len(positions)):
        nearest = distances[remaining].min()
        tied = np.flatnonzero(remaining & (distances <= nearest + TIE_TOLERANCE))
        pick = tied[np.argmin(positions[tied])]
        order.append(pick)
        remaining[pick] = False
    order = np.asarray(order, dtype=np.int64)
    return positions[order], distances[order]
