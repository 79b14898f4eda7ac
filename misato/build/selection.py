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
        distance_to_centre: ``1 - cos(feature, centre)`` of the chosen member (0 = on the centre's direction).
        candidates: every member's position, nearest to the centre first (ties: smaller position first); the
            builder falls back to later ones when a COCO image admits no background mask.
    """

    position: int
    cluster_id: int
    cluster_size: int
    distance_to_centre: float
    candidates: tuple[int, ...]


def select_representatives(features: np.ndarray, n_clusters: int, seed: int, domain: str = "domain") -> list[Representative]:
    """Cluster ``features`` with ``BisectingKMeans(n_clusters, random_state=seed)`` and pick each centre's image.

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
    from sklearn.cluster import BisectingKMeans

    features = np.asarray(features, dtype=np.float32)
    if len(features) < n_clusters:
        raise MisatoError(
            f"domain {domain!r}: {len(features)} usable images, but {n_clusters} representatives were asked for; "
            "add images or lower --per-domain"
        )
    if n_clusters == len(features):
        labels = np.arange(len(features))
        centres = features.astype(np.float64)
    else:
        model = BisectingKMeans(n_clusters=n_clusters, random_state=seed).fit(features)
        labels, centres = model.labels_, model.cluster_centers_.astype(np.float64)
    chosen = []
    for cluster_id in range(n_clusters):
        members = np.flatnonzero(labels == cluster_id)
        centre = centres[cluster_id]
        norm = np.linalg.norm(centre)
        cosine = features[members].astype(np.float64) @ (centre / norm if norm > 0 else centre)
        order = np.lexsort((members, -cosine))  # highest cosine first, then smallest position
        ranked = members[order]
        chosen.append(
            Representative(
                position=int(ranked[0]),
                cluster_id=cluster_id,
                cluster_size=len(members),
                distance_to_centre=float(1.0 - cosine[order[0]]),
                candidates=tuple(int(p) for p in ranked),
            )
        )
    return sorted(chosen, key=lambda representative: representative.position)
