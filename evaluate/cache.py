"""On-disk cache of ground-truth features, shared by every method evaluated against the same images.

An entry is keyed by the image file's sha256, the protocol, the feature weights' sha256 and the feature code
version; it lives in ``<cache>/features/<protocol>-<weights sha256[:16]>-v<versions>/<file sha256>.npy`` and
is written atomically, so concurrent or killed runs never leave a half-written entry. The default root is
``$MISATO_CACHE`` (``~/.cache/misato``), never inside the installed package.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from misato import __version__
from misato.io import atomic_write_bytes
from misato.weights import misato_cache_dir

FEATURE_CODE_VERSION = 1
"""Bump when feature preprocessing changes, so stale entries are never read."""


class FeatureCache:
    """Feature vectors ``float32 [D]`` keyed by image content hash, for one protocol and one weight file."""

    def __init__(self, protocol: str, weights_sha256: str, root: str | os.PathLike | None = None) -> None:
        root = Path(root) if root is not None else misato_cache_dir()
        tag = f"{protocol}-{weights_sha256[:16]}-v{FEATURE_CODE_VERSION}-{__version__}"
        self.folder = root / "features" / tag

    def _path(self, content_sha256: str) -> Path:
        return self.folder / f"{content_sha256}.npy"

    def get(self, content_sha256: str) -> np.ndarray | None:
        """The cached vector, or None when absent (or unreadable, which is treated as absent)."""
        path = self._path(content_sha256)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, content_sha256: str, features: np.ndarray) -> None:
        """Store one vector atomically."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self._path(content_sha256), buffer.getvalue())
