"""The one on-disk feature cache: feature rows keyed by the sha256 of the image file they were computed from.

Used by the evaluator (ground-truth Inception features, shared by every method evaluated against the same
images) and by the builder (CLIP features for selection). One cache folder holds the rows of one feature
network with one set of weights and one preprocessing:
``<root>/features/<name>-<weights sha256[:16]>-<version>/<tag>-<digest>.npy``, ``root`` defaulting to
``$MISATO_CACHE`` (``~/.cache/misato``), never inside the installed package.

Each shard is a single ``.npy`` structured array with fields ``sha256`` (``S64``), ``reason`` (why the image is
unusable, ``""`` for a usable row) and ``features`` (``float32 [D]``, NaN for unusable rows), written atomically,
so a concurrent or killed run never leaves a half-written shard; a damaged shard is ignored (its rows are simply
recomputed). Rows are buffered by :meth:`FeatureCache.put` and written every ``flush_every`` rows, on
:meth:`FeatureCache.flush` and when a ``with cache:`` block ends; with ``flush_every=1`` every row is durable as
soon as it is put. A folder that has collected more than :data:`COMPACT_AFTER` shards is merged into one when it
is next opened, so a warm cache is read in a few file opens.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from misato import __version__
from misato.hashing import bytes_sha256, misato_cache_dir
from misato.io import atomic_write_bytes

FEATURE_CODE_VERSION = 2
"""Bump when the evaluator's feature preprocessing changes, so stale entries are never read."""
COMPACT_AFTER = 64
"""A cache folder with more shards than this is merged into one shard when opened."""


class FeatureCache:
    """Feature rows ``float32 [D]`` keyed by content sha256, for one feature network and one weight file.

    Args:
        name: what computed the features: the evaluator's protocol (``"asuka"``), or the builder's encoder and
            batching (``"clip-ViT-L-14-cpu-b32"``).
        weights_sha256: digest of the network's weights (file or state dict).
        root: cache root (default ``$MISATO_CACHE``); the rows live in ``root/features/<key>/``.
        version: the feature code's version in the key (default: :data:`FEATURE_CODE_VERSION` and the toolkit
            version, so any release recomputes).
        flush_every: pending rows are written as a shard once this many are buffered (1 = every put).
        tag: shard-name prefix, distinct per writer process (ranks), so concurrent writers never collide.
    """

    def __init__(self, name: str, weights_sha256: str, root: str | os.PathLike | None = None, *,
                 version: str | None = None, flush_every: int = 1, tag: str = "0") -> None:
        root = Path(root).expanduser() if root is not None else misato_cache_dir()
        version = f"v{FEATURE_CODE_VERSION}-{__version__}" if version is None else version
        key = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{weights_sha256[:16]}-{version}"
        self.folder = root / "features" / key
        self.flush_every = max(1, int(flush_every))
        self.tag = tag
        self._rows: dict[str, tuple[np.ndarray | None, str]] = {}
        self._pending: dict[str, tuple[np.ndarray | None, str]] = {}
        shards = sorted(self.folder.glob("*.npy")) if self.folder.is_dir() else []
        read = [shard for shard in shards if self._load(shard)]
        if len(read) > COMPACT_AFTER:
            self._compact(read)

    # --- reading ---------------------------------------------------------------------------------------------

    def _load(self, shard: Path) -> bool:
        try:
            table = np.load(shard, allow_pickle=False)
            digests, reasons, features = table["sha256"], table["reason"], table["features"]
        except (OSError, ValueError, KeyError, IndexError):
            return False  # damaged or vanished (compacted by another process): its rows are recomputed
        for digest, reason, row in zip(digests.tolist(), reasons.tolist(), features):
            self._rows[digest.decode()] = (None, reason) if reason else (row.astype(np.float32), "")
        return True

    def __contains__(self, content_sha256: str) -> bool:
        return content_sha256 in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, content_sha256: str) -> np.ndarray | None:
        """The cached ``float32 [D]`` row, or None when absent or recorded as unusable."""
        return self._rows.get(content_sha256, (None, ""))[0]

    def reason(self, content_sha256: str) -> str:
        """Why the image was recorded as unusable; ``""`` for a usable or absent row."""
        return self._rows.get(content_sha256, (None, ""))[1]

    @property
    def dim(self) -> int | None:
        """Length of the cached rows (None while no usable row is known)."""
        return next((len(row) for row, _ in self._rows.values() if row is not None), None)

    # --- writing ---------------------------------------------------------------------------------------------

    def put(self, content_sha256: str, features: np.ndarray | None, reason: str = "") -> None:
        """Add one row: a ``[D]`` vector, or ``None`` with the ``reason`` the image is unusable."""
        if features is None and not reason:
            raise ValueError("an unusable row needs a reason")
        entry = (None, reason) if features is None else (np.asarray(features, dtype=np.float32).reshape(-1), "")
        self._rows[content_sha256] = entry
        self._pending[content_sha256] = entry
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as one new shard (atomically)."""
        if self._pending:
            self._write(self._pending)
            self._pending = {}

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.flush()  # also after an interruption: what was computed is kept

    def _write(self, rows: dict[str, tuple[np.ndarray | None, str]]) -> Path:
        digests = sorted(rows)
        dim = self.dim or 0
        longest = max((len(rows[d][1]) for d in digests), default=0)
        table = np.zeros(len(digests), dtype=[("sha256", "S64"), ("reason", f"U{max(1, longest)}"),
                                              ("features", np.float32, (dim,))])
        table["sha256"] = [d.encode() for d in digests]
        table["reason"] = [rows[d][1] for d in digests]
        for index, digest in enumerate(digests):
            row = rows[digest][0]
            table["features"][index] = np.nan if row is None else row
        buffer = io.BytesIO()
        np.save(buffer, table, allow_pickle=False)
        path = self.folder / f"{self.tag}-{bytes_sha256(''.join(digests).encode())[:16]}.npy"
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def _compact(self, shards: list[Path]) -> None:
        """Merge ``shards`` (all read) into one, then remove them."""
        merged = self._write(self._rows)
        for shard in shards:
            if shard != merged:
                shard.unlink(missing_ok=True)
