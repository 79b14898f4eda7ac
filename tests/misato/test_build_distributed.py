"""Feature extraction and the build with 2 CPU processes (gloo) equal the single-process run, bit for bit."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np

from misato.build import build
from misato.build.features import extract_features, load_clip
from misato.build.readers import read_flickr_landscape
from tests.misato.test_build_support import BoxMasks, tiny_clip_model, write_flickr, write_megadepth

SIZE = 32


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _build_options(root: Path) -> dict:
    return dict(flickr_landscape=root / "flickr", megadepth=root / "megadepth", size=SIZE, per_domain=3,
                batch_size=3, mask_generator=BoxMasks(SIZE), progress=False)


def _worker(rank: int, world: int, port: int, root: str) -> None:
    import torch.distributed as dist

    root = Path(root)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        encoder = load_clip(f"local-dir:{root / 'clip'}", "none", "cpu")  # config written by the parent
        items = read_flickr_landscape(root / "flickr")
        result = extract_features(items, encoder, root / "cache", batch_size=3, min_side=16, progress=False)
        if rank == 0:
            np.save(root / "features.npy", result.features)
            (root / "problems.json").write_text(json.dumps(result.problems))
        build(root / "out-distributed", encoder=encoder, feature_cache=root / "cache", **_build_options(root))
        dist.barrier()  # both ranks done before either tears the group down
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    write_flickr(tmp_path / "flickr", n=10)
    (tmp_path / "flickr" / "broken.jpg").write_bytes(b"broken")
    write_megadepth(tmp_path / "megadepth", scenes=2, per_scene=4)
    tiny_clip_model(tmp_path / "clip")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    encoder = load_clip(tiny_clip_model(tmp_path / "clip"), "none", "cpu")
    items = read_flickr_landscape(tmp_path / "flickr")
    single = extract_features(items, encoder, None, batch_size=3, min_side=16, progress=False)
    assert np.array_equal(np.load(tmp_path / "features.npy"), single.features, equal_nan=True)
    assert {int(k): v for k, v in json.loads((tmp_path / "problems.json").read_text()).items()} == single.problems
    assert list(single.problems) == [10]  # broken.jpg sorts after the digits

    build(tmp_path / "out-single", encoder=encoder, feature_cache=tmp_path / "cache-single", **_build_options(tmp_path))
    files = sorted(p.relative_to(tmp_path / "out-single") for p in (tmp_path / "out-single").rglob("*") if p.is_file())
    assert len(files) == 2 + 2 * 6
    for relative in files:
        assert (tmp_path / "out-distributed" / relative).read_bytes() == (tmp_path / "out-single" / relative).read_bytes()
