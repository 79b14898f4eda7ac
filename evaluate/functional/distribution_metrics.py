"""Set-level metrics on Inception features: Fréchet distance and the Inception discriminative scores.

Features are ``[N, D]`` arrays (float32 or float64), one row per image, real and fake rows in the same
image order (P-IDS pairs row i of each).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.svm import LinearSVC

from evaluate.metric_info import IDS_MIN_SAMPLES
from misato.errors import MisatoError


def _feature_matrix(features: np.ndarray) -> np.ndarray:
    """``[N, D]`` float64 with N >= 2, or a MisatoError (a covariance needs two rows)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise MisatoError(f"FID needs at least 2 images per set, got {features.shape[0] if features.ndim else 0}")
    return features


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divisor N − 1), float64.

    Raises:
        MisatoError: fewer than 2 rows (the covariance is undefined).
    """
    features = _feature_matrix(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians, ``|μ1 − μ2|² + tr(Σ1 + Σ2 − 2·(Σ1Σ2)^½)``.

    The trace of the matrix square root is computed from symmetric eigenproblems: with ``S = Σ1^½`` (from
    ``eigh``, negative eigenvalues clipped to 0), ``(Σ1Σ2)^½`` is similar to ``(S Σ2 S)^½``, a symmetric
    PSD matrix, so ``tr (Σ1Σ2)^½ = Σ sqrt(eigvalsh(S Σ2 S))``. This matches ``scipy.linalg.sqrtm``'s real
    part to ~1e-10 relative and is several times faster at 2048².
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    root1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between feature sets ``real [N, D]`` and ``fake [M, D]`` (unbiased covariances).

    When both sets have fewer rows than dimensions (MISATO: 2000 images, 2048-d; any per-domain subset), the
    covariances are low-rank and the same number comes exactly from the centred features: with
    ``A = (real − μ)ᵀ/√(N−1)`` and ``B = (fake − μ')ᵀ/√(M−1)``, ``Σ1 = AAᵀ`` and ``Σ2 = BBᵀ``, the non-zero
    eigenvalues of ``Σ1Σ2`` are the squared singular values of ``AᵀB`` (``N × M``), so
    ``tr (Σ1Σ2)^½`` is the sum of those singular values and ``tr Σ = ‖A‖²``. Otherwise
    :func:`frechet_distance` on the ``D × D`` statistics.
    """
    real, fake = _feature_matrix(real), _feature_matrix(fake)
    if real.shape[1] != fake.shape[1]:
        raise MisatoError(f"FID needs features of equal width, got {real.shape[1]} and {fake.shape[1]}")
    if max(len(real), len(fake)) >= real.shape[1]:
        return frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    a = (real - real.mean(axis=0)) / np.sqrt(len(real) - 1)
    b = (fake - fake.mean(axis=0)) / np.sqrt(len(fake) - 1)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = real.mean(axis=0) - fake.mean(axis=0)
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt)


def check_ids_pca(pca_dim: int | None, n_images: int, feature_dim: int) -> None:
    """Raise a MisatoError unless PCA to ``pca_dim`` is possible on ``2·n_images`` samples of ``feature_dim``."""
    if pca_dim is not None and (pca_dim >= 2 * n_images or pca_dim > feature_dim):
        raise MisatoError(
            f"IDS with PCA to {pca_dim} dimensions needs more than {pca_dim // 2} images (have {n_images}) and at "
            f"most {feature_dim} feature dimensions; pass --ids-pca with a value below "
            f"{min(2 * n_images, feature_dim + 1)} or --ids-pca none"
        )


def inception_discriminative_scores(
    real: np.ndarray, fake: np.ndarray, pca_dim: int | None = None
) -> tuple[float, float]:
    """U-IDS and P-IDS (Co-Mod-GAN), as the official MISATO scripts compute them.

    Real and fake features are stacked; optionally projected by PCA fitted on the stack (exact
    ``svd_solver="full"``, so results are deterministic — the official script's default randomized solver is
    not); a ``LinearSVC(dual=False)`` (C = 1) separates real (1) from fake (0).
    U-IDS = 1 − accuracy on the data it was fitted on; P-IDS = fraction of pairs with
    ``decision(fake_i) > decision(real_i)``.

    Args:
        real, fake: ``[N, D]`` features of the same N images, same order.
        pca_dim: PCA dimensions (MISATO@512 uses 512), or None for no PCA (Co-Mod convention).
    Returns:
        ``(u_ids, p_ids)``, both in [0, 1], higher is better.
    Raises:
        MisatoError: mismatched shapes, or a PCA size the sample count cannot support.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.shape != fake.shape or real.ndim != 2:
        raise MisatoError(f"IDS needs real and fake features of the same shape, got {real.shape} and {fake.shape}")
    n = real.shape[0]
    if n < 2:
        raise MisatoError(f"IDS needs at least 2 images, got {n}")
    stacked = np.concatenate([real, fake])
    if pca_dim is not None:
        check_ids_pca(pca_dim, n, stacked.shape[1])
        stacked = PCA(n_components=pca_dim, svd_solver="full").fit_transform(stacked)
    if 2 * n < IDS_MIN_SAMPLES:
        warnings.warn(
            f"IDS on {n} image pairs ({2 * n} samples, fewer than {IDS_MIN_SAMPLES}): U-IDS is measured on the "
            "SVM's own training data and is optimistic at this size; report N with it.",
            stacklevel=2,
        )
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    svm = LinearSVC(dual=False, random_state=0)
    svm.fit(stacked, labels)
    u_ids = 1.0 - float(svm.score(stacked, labels))
    decision = svm.decision_function(stacked)
    p_ids = float(np.mean(decision[n:] > decision[:n]))
    return u_ids, p_ids
