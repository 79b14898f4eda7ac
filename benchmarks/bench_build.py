"""Builder speed: CLIP extraction overhead over a bare forward pass, and BisectingKMeans growth with N.

1. ``extract_features`` (file read + sha256 + JPEG decode + open_clip preprocessing in DataLoader workers +
   forward + normalisation + cache write) on synthetic 640×480 JPEGs, divided by the bare ``encode_image``
   time on the very same preprocessed batches measured in the same run. Target: <= 1.2 (decoding hidden behind
   the forward by the workers). Architecture: open_clip ViT-B-32 with random weights (real size, no download).
2. ``select_representatives`` (BisectingKMeans, 500 clusters) on 768-d unit vectors drawn around 2,000 random
   directions, at 10k / 50k / 200k rows; prints each time and its growth relative to the smallest N.

Usage: ``python benchmarks/bench_build.py [--quick] [--workers 2] [--batch-size 32]``
(``--quick``: 64 images, 2k/5k/10k rows).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_clip(n_images: int, batch_size: int, workers: int) -> None:
    import torch
    from PIL import Image

    from misato.build.features import extract_features, load_clip
    from misato.build.readers import read_image_folder

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    encoder = load_clip("ViT-B-32", "none", "cpu")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(n_images):
            coarse = rng.uniform(0, 255, size=(12, 16, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC)
            noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (480, 640, 3)), 0, 255)
            buffer = io.BytesIO()
            Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
            (Path(folder) / f"{i:05d}.jpg").write_bytes(buffer.getvalue())
        items = read_image_folder(folder)
        # warm-up (thread pools, allocator) on one batch, outside both timings
        warm = torch.stack([encoder.preprocess(Image.open(io.BytesIO(items[0].read_bytes())).convert("RGB"))] * batch_size)
        with torch.inference_mode():
            encoder.model.encode_image(warm)
        start = time.perf_counter()
        extract_features(items, encoder, Path(folder) / "cache", batch_size=batch_size, num_workers=workers, progress=False)
        pipeline = time.perf_counter() - start
        tensors = [encoder.preprocess(Image.fromarray(item.decode())) for item in items]
        batches = [torch.stack(tensors[s : s + batch_size]) for s in range(0, len(tensors), batch_size)]
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                torch.nn.functional.normalize(encoder.model.encode_image(batch), dim=-1)
        bare = time.perf_counter() - start
    print(f"CLIP ViT-B-32 (random init, fp32, CPU), {n_images} JPEGs 640x480, batch {batch_size}, {workers} workers")
    print(f"  extract_features      {pipeline:8.2f} s  ({n_images / pipeline:6.1f} img/s)")
    print(f"  bare forward          {bare:8.2f} s  ({n_images / bare:6.1f} img/s)")
    print(f"  ratio pipeline / bare {pipeline / bare:8.3f}   (target <= 1.2)")


def bench_kmeans(sizes: list[int], n_clusters: int = 500, dim: int = 768) -> None:
    import sklearn.cluster  # noqa: F401  (import cost outside the timings)

    from misato.build.selection import select_representatives

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(2000, dim))
    print(f"BisectingKMeans, {n_clusters} clusters, {dim}-d unit vectors around 2000 directions")
    first = None
    for n in sizes:
        features = directions[rng.integers(0, 2000, n)] + 0.6 * rng.normal(size=(n, dim))
        features = (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)
        start = time.perf_counter()
        select_representatives(features, n_clusters, seed=0)
        elapsed = time.perf_counter() - start
        first = first or (n, elapsed)
        print(f"  N = {n:7d}: {elapsed:8.2f} s   x{elapsed / first[1]:6.2f} time for x{n / first[0]:5.1f} rows")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute on 2 cores)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-clip", action="store_true")
    parser.add_argument("--skip-kmeans", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_clip:
        bench_clip(64 if args.quick else 256, args.batch_size, args.workers)
    if not args.skip_kmeans:
        bench_kmeans([2_000, 5_000, 10_000] if args.quick else [10_000, 50_000, 200_000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
