"""sha256 of files, bytes and state dicts: the one place the toolkit hashes content.

:func:`file_sha256` remembers digests per (resolved path, size, modification time) — in memory, and for large
files (weights) also on disk in ``$MISATO_CACHE/sha256-memo.json`` — so a ~350 MB weight file is not re-read by
every run. A changed file has a new modification time and is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from misato.io import atomic_write_text

HASH_MEMO_NAME = "sha256-memo.json"
HASH_MEMO_MIN_BYTES = 1 << 20
"""Files at least this large have their digest remembered across runs in the cache folder."""
_BLOCK = 1 << 20

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def misato_cache_dir() -> Path:
    """Root of the toolkit's caches: ``$MISATO_CACHE`` or ``~/.cache/misato`` (never inside the package)."""
    return Path(os.environ.get("MISATO_CACHE", Path.home() / ".cache" / "misato")).expanduser()


def _hash_memo_path() -> Path:
    return misato_cache_dir() / HASH_MEMO_NAME


def _read_hash_memo() -> dict:
    try:
        memo = json.loads(_hash_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def bytes_sha256(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stream_sha256(stream, block: int = _BLOCK) -> tuple[str, int]:
    """``(sha256 hex digest, byte count)`` of everything left in a binary stream, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: stream.read(block), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_md5(path: str | os.PathLike) -> str:
    """md5 hex digest of a file (only for checking files whose publisher gives nothing but an md5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike, remember: bool = True) -> str:
    """sha256 hex digest of a file.

    Args:
        path: the file.
        remember: use and fill the memos (in memory; on disk for files of at least :data:`HASH_MEMO_MIN_BYTES`).
            ``False`` for scratch files, whose digests must not outlive them.
    """
    path = Path(path)
    stat = path.stat()
    resolved = str(path.resolve())
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    if remember and key in _HASH_CACHE:
        return _HASH_CACHE[key]
    persistent = remember and stat.st_size >= HASH_MEMO_MIN_BYTES
    memo = _read_hash_memo() if persistent else {}
    remembered = memo.get(resolved)
    if isinstance(remembered, dict) and [remembered.get("size"), remembered.get("mtime_ns")] == list(key[1:]):
        _HASH_CACHE[key] = str(remembered["sha256"])
        return _HASH_CACHE[key]
    with open(path, "rb") as handle:
        digest = stream_sha256(handle)[0]
    if not remember:
        return digest
    _HASH_CACHE[key] = digest
    if persistent:
        memo[resolved] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        try:
            atomic_write_text(_hash_memo_path(), json.dumps(memo, indent=1, sort_keys=True))
        except OSError:  # a read-only cache only costs the re-hash next time
            pass
    return digest


def tree_sha256(path: str | os.PathLike) -> str | dict[str, str]:
    """A file's sha256, or for a folder ``{relative path: sha256}`` of every file below it (sorted)."""
    path = Path(path)
    if path.is_dir():
        return {str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return file_sha256(path)


def state_dict_sha256(model) -> str:
    """sha256 over a torch module's state dict in key order (names, dtypes, shapes and raw bytes): identifies
    weights whatever file they came from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
