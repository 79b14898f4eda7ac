"""Mask generation speed per preset at 512 px on one core, against PNG encoding of the same masks.

Prints masks/second of ``gen.sample`` and the ratio ``generation time / PNG-encode time`` measured in the same
run (target <= 1.0 for the stroke/box presets: drawing a mask should cost no more than saving it). Object
presets use ``--objects`` if given, else a synthetic folder of 16 blob silhouettes (disc unions) made here.

    python benchmarks/bench_masks.py --n 50 [--size 512] [--objects instances_val2014.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from misato.io import encode_png, mask_to_uint8, write_mask  # noqa: E402
from misato.masks import PRESETS, make_generator, mask_rng  # noqa: E402


def synthetic_objects(folder: Path, count: int = 16) -> Path:
    """``count`` 256 x 256 silhouettes, each a union of 3–6 random discs (255 = object)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:256, :256]
    for i in range(count):
        mask = np.zeros((256, 256), bool)
        for _ in range(rng.integers(3, 7)):
            cy, cx, r = rng.integers(60, 196), rng.integers(60, 196), rng.integers(10, 40)
            mask |= (ys - cy) ** 2 + (xs - cx) ** 2 < r * r
        write_mask(folder / f"{i:03d}.png", mask)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="masks per preset")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--objects", help="object source for object/asuka-train/misato")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as scratch:
        objects = args.objects or synthetic_objects(Path(scratch) / "objects")
        print(f"{'preset':16} {'masks/s':>9} {'gen ms':>8} {'png ms':>8} {'gen/png':>8} {'mean ratio':>10}")
        for preset in PRESETS:
            generator = make_generator(preset, args.size, objects=objects if PRESETS[preset].needs_objects else None)
            start = time.perf_counter()
            masks = [generator.sample(mask_rng(0, i))[0] for i in range(args.n)]
            generation = time.perf_counter() - start
            start = time.perf_counter()
            for mask in masks:
                encode_png(mask_to_uint8(mask))
            encoding = time.perf_counter() - start
            print(f"{preset:16} {args.n / generation:9.1f} {1000 * generation / args.n:8.2f} "
                  f"{1000 * encoding / args.n:8.2f} {generation / encoding:8.2f} {np.mean([m.mean() for m in masks]):10.3f}")


if __name__ == "__main__":
    main()
