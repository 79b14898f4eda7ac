"""CLIP score from image embeddings: the per-pair cosine similarity (the metric is its mean, higher is better).

The embeddings come from :class:`evaluate.features.clip.ClipScorer` (OpenAI CLIP ViT-L/14 of the hole region of
the prediction and of the ground truth); that module's docstring describes the protocol and how it differs
from the released official script.
"""
from __future__ import annotations

import numpy as np


def _rows(embeddings, name: str) -> np.ndarray:
    """``[N, D]`` float64 from a numpy array or a (any-device) torch tensor."""
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().double().numpy()
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {embeddings.shape}")
    return embeddings


def clip_score(pred_embeddings, gt_embeddings) -> np.ndarray:
    """Cosine similarity of row i of ``pred_embeddings`` with row i of ``gt_embeddings``.

    Args:
        pred_embeddings, gt_embeddings: ``[N, D]`` numpy arrays or torch tensors, any scale (each row is
            L2-normalised here, in float64); rows must be non-zero.
    Returns:
        float64 ``[N]`` in [−1, 1]; 1 means the two embeddings point the same way.
    Raises:
        ValueError: the two sets differ in shape or are not 2-D.
    """
    pred, gt = _rows(pred_embeddings, "pred_embeddings"), _rows(gt_embeddings, "gt_embeddings")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt embeddings must have the same shape, got {pred.shape} and {gt.shape}")
    pred = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
    return np.einsum("nd,nd->n", pred, gt)
