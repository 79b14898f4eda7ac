import numpy as np
import pytest

from misato import cache as cache_module
from misato.cache import FeatureCache


def _digest(i):
    return f"{i:064x}"


def test_rows_survive_a_new_process_and_the_key_separates_networks(tmp_path):
    rng = np.random.default_rng(0)
    rows = {_digest(i): rng.standard_normal(8).astype(np.float32) for i in range(5)}
    cache = FeatureCache("asuka", "ab" * 32, tmp_path)
    for digest, row in rows.items():
        cache.put(digest, row)
    cache.put(_digest(99), None, "too small (4x4)")
    again = FeatureCache("asuka", "ab" * 32, tmp_path)  # flush_every=1: every put is already on disk
    assert len(again) == 6 and again.dim == 8
    for digest, row in rows.items():
        assert np.array_equal(again.get(digest), row) and again.get(digest).dtype == np.float32
    assert again.get(_digest(99)) is None and again.reason(_digest(99)) == "too small (4x4)"
    assert _digest(99) in again and _digest(7) not in again and again.get(_digest(7)) is None
    assert len(FeatureCache("comod", "ab" * 32, tmp_path)) == 0
    assert len(FeatureCache("asuka", "cd" * 32, tmp_path)) == 0
    assert len(FeatureCache("asuka", "ab" * 32, tmp_path, version="v0")) == 0
    assert again.folder.parent == tmp_path / "features"


def test_buffered_rows_are_written_on_flush_and_at_the_end_of_a_with_block(tmp_path):
    cache = FeatureCache("clip", "00" * 32, tmp_path, flush_every=3, tag="r1")
    cache.put(_digest(0), np.ones(4))
    cache.put(_digest(1), np.zeros(4))
    assert not cache.folder.exists()  # still buffered
    cache.put(_digest(2), np.ones(4))
    assert len(list(cache.folder.glob("r1-*.npy"))) == 1
    with pytest.raises(KeyboardInterrupt), cache:
        cache.put(_digest(3), np.full(4, 2.0))
        raise KeyboardInterrupt  # an interrupted run keeps what it computed
    assert np.array_equal(FeatureCache("clip", "00" * 32, tmp_path).get(_digest(3)), np.full(4, 2.0, np.float32))


def test_damaged_shards_are_ignored_and_many_shards_are_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "COMPACT_AFTER", 3)
    cache = FeatureCache("asuka", "ab" * 32, tmp_path)
    for i in range(5):
        cache.put(_digest(i), np.full(2, float(i)))
    shards = sorted(cache.folder.glob("*.npy"))
    assert len(shards) == 5
    shards[0].write_bytes(b"garbage")
    opened = FeatureCache("asuka", "ab" * 32, tmp_path)
    assert len(opened) == 4  # the damaged shard's row is simply absent (recomputed by the caller)
    assert len(list(cache.folder.glob("*.npy"))) == 2  # 4 readable shards merged into one; the damaged one stays
    merged = FeatureCache("asuka", "ab" * 32, tmp_path)
    kept = [i for i in range(5) if _digest(i) in merged]
    assert len(kept) == 4 and all(merged.get(_digest(i)).tolist() == [float(i)] * 2 for i in kept)


def test_an_unusable_row_needs_a_reason(tmp_path):
    with pytest.raises(ValueError, match="needs a reason"):
        FeatureCache("asuka", "ab" * 32, tmp_path).put(_digest(0), None)
