"""`misato grid` HTML page over N images × 8 methods, against decoding those images once, in the same run.

Writes a MISATO folder (crops of scikit-image's photographs, one rectangular hole each) and 8 prediction folders, then
times (a) reading every ground truth, mask and prediction once with misato.io (the reference: the least any grid
must do) and (b) `results.grid.grid` writing the HTML page (index.html + one JPEG strip per image). Prints both
and the ratio grid / decode (target <= 2.0), in CPU time of this process (robust on a shared machine; both are
single-threaded). The files are read once before timing so both find them cached.

    python benchmarks/bench_grid.py [--n 200] [--size 256] [--tile 256] [--methods 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from misato.build.crop import crop_resize_image  # noqa: E402
from misato.cli_demo import SAMPLE_IMAGES, sample_image  # noqa: E402
from misato.io import (atomic_write_bytes, encode_png, list_images, read_image, read_mask, write_image,  # noqa: E402
                       write_mask)
from results.grid import grid  # noqa: E402


def synthetic_data(root: Path, n: int, size: int, methods: int) -> list[Path]:
    """``root/data`` (image/, mask/) and ``root/pred<k>`` folders with a ``run.json`` each; returns the latter.

    Images are random ``size``-pixel crops of scikit-image's bundled photographs (so PNG decoding and JPEG
    encoding cost what they cost on photographs); each hole is a rectangle, filled in the predictions with another
    crop of the same photograph. The methods share that prediction's bytes (one PNG encoding per image keeps the
    set-up short; every file is still decoded on its own by both measurements).
    """
    rng = np.random.default_rng(0)
    photos = [crop_resize_image(sample_image(name), 2 * size) for name in SAMPLE_IMAGES]
    runs = [root / f"pred{k}" for k in range(methods)]

    def crop(photo: np.ndarray) -> np.ndarray:
        y, x = rng.integers(0, size, 2)
        return photo[y : y + size, x : x + size]

    for i in range(n):
        photo = photos[i % len(photos)]
        image = crop(photo)
        hole = np.zeros((size, size), bool)
        y, x = rng.integers(0, size // 2, 2)
        hole[y : y + size // 3, x : x + size // 3] = True
        write_image(root / "data" / "image" / f"{i:04d}.png", image)
        write_mask(root / "data" / "mask" / f"{i:04d}.png", hole)
        prediction = image.copy()
        prediction[hole] = crop(photo)[hole]
        encoded = encode_png(prediction)
        for run in runs:
            atomic_write_bytes(run / f"{i:04d}.png", encoded)
    for k, run in enumerate(runs):
        (run / "run.json").write_text(json.dumps({"method": f"method{k}", "complete": True}))
    return runs


def decode_once(data: Path, runs: list[Path]) -> float:
    """CPU seconds to read every ground truth, mask and prediction once."""
    images, masks = list_images(data / "image"), list_images(data / "mask")
    predictions = [list_images(run) for run in runs]
    start = time.process_time()
    for name in images:
        read_image(images[name])
        read_mask(masks[name])
        for files in predictions:
            read_image(files[name])
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images (the issue's full size: 2000)")
    parser.add_argument("--size", type=int, default=256, help="image side")
    parser.add_argument("--tile", type=int, default=256, help="tile side of the grid")
    parser.add_argument("--methods", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        runs = synthetic_data(root, args.n, args.size, args.methods)
        for path in root.rglob("*.png"):
            path.read_bytes()  # into the page cache, for both measurements alike
        decode = decode_once(root / "data", runs)
        start, wall = time.process_time(), time.perf_counter()
        grid(root / "data", runs, root / "page", tile=args.tile)
        seconds, wall = time.process_time() - start, time.perf_counter() - wall
        decode = min(decode, decode_once(root / "data", runs))
        files = len(list((root / "page" / "rows").iterdir()))
    print(f"{args.n} images x {args.methods} methods at {args.size} px, tile {args.tile}: "
          f"decode once {decode:.2f} s, grid (HTML, {files} strips) {seconds:.2f} s ({wall:.2f} s wall), "
          f"ratio {seconds / decode:.2f} (target <= 2.0)")


if __name__ == "__main__":
    main()
