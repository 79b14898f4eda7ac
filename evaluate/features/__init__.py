"""Feature networks for the evaluator, always built from registry weight files (never downloaded here).

- :func:`build_feature_extractor` — ``"torchvision-inception"`` (protocol ``asuka``) or ``"fid-inception"``
  (protocol ``comod``): images float32 [N, 3, H, W] RGB in [0, 1] -> float32 [N, 2048].
- :data:`PREPROCESSORS` — each protocol's preprocessing route (``Protocol.preprocess``) by name: uint8
  ``[H, W, 3]`` → the network's prepared input ``[3, 299, 299]`` (CPU, DataLoader workers); the extractor's
  ``forward_prepared`` takes a stack of them.
- :func:`build_lpips` — LPIPS v0.1 distances, float32 [N].
- :func:`save_random_official_weights` — random real architectures in the official file format (tests/benchmarks).

Every built module carries ``.weights`` = {registry name: sha256} for the records.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from evaluate.features import fid_inception, inception
from evaluate.features.lpips import build_lpips
from evaluate.features.random_weights import save_random_official_weights

# extractor kind -> registry entry of its weights
EXTRACTOR_WEIGHTS = {"torchvision-inception": "inception-v3-imagenet", "fid-inception": "fid-inception"}
PREPROCESSORS = {inception.PREPROCESS: inception.prepare_pil, fid_inception.PREPROCESS: fid_inception.prepare_tf1}


def build_feature_extractor(
    kind: str,
    weights_path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The ``kind`` feature extractor in eval mode, float32, channels-last, on ``device``.

    ``extractor(x)``: x float32 [N, 3, H, W] RGB in [0, 1], any H, W -> float32 [N, 2048]. The
    ``fid-inception`` extractor also offers ``extractor.features(x, tap)`` with tap in ``"64"``, ``"192"``,
    ``"768"``, ``"2048"``. Weights come from ``weights_path`` (trusted) or the registry search
    (``weights_dir`` first; see :mod:`misato.weights`).

    Raises:
        MisatoError: weights missing (offline), failing their hash check, or with the wrong keys/shapes.
    """
    from misato.weights import resolve

    if kind not in EXTRACTOR_WEIGHTS:
        raise ValueError(f"unknown feature extractor {kind!r}; choose one of {sorted(EXTRACTOR_WEIGHTS)}")
    found = resolve(EXTRACTOR_WEIGHTS[kind], weights_path, weights_dir)
    record = {found.entry.name: found.sha256}
    if kind == "fid-inception":
        extractor = fid_inception.load_fid_inception(found.path, str(found.path), record)
    else:
        extractor = inception.load_torchvision_inception(found.path, str(found.path), record)
    # channels-last: same math, faster convolutions (measured ~1.7-2x on CPU); set here so that every user of
    # the extractor gets the same bits as the evaluator.
    return extractor.to(device=device, dtype=torch.float32, memory_format=torch.channels_last)


__all__ = ["EXTRACTOR_WEIGHTS", "PREPROCESSORS", "build_feature_extractor", "build_lpips", "save_random_official_weights"]
