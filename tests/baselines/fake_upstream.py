"""A stand-in for an upstream repository's inference script, with its own conventions (for test_command.py).

It knows nothing of misato (PIL and numpy only). Conventions, deliberately unlike MISATO's:
- masks are ``<stem>_m.png`` in ``--masks``, the image is ``<stem>.png`` in ``--src`` (the two may be one folder);
- mask polarity 255 = **known** pixel, 0 = hole;
- it writes ``<stem>_inpainted.png`` in ``--dst``: every hole pixel set to the per-channel mean of the known pixels
  (truncated), every known pixel changed by +1 (mod 256), so that paste-back is visible.

Faults on request: ``--fail-after N --counter FILE`` exits with status 3 after printing 30 stderr lines once it has
been called more than N times; ``--shrink`` writes the result one pixel narrower; ``--gray`` writes it as
greyscale; ``--require FILE`` exits with status 4 unless FILE exists.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--fail-after", type=int)
    parser.add_argument("--counter")
    parser.add_argument("--shrink", action="store_true")
    parser.add_argument("--gray", action="store_true")
    parser.add_argument("--require")
    args = parser.parse_args()
    if args.require is not None and not Path(args.require).is_file():
        print(f"no such file: {args.require}", file=sys.stderr)
        return 4
    if args.counter is not None:
        counter = Path(args.counter)
        calls = int(counter.read_text()) + 1 if counter.is_file() else 1
        counter.write_text(str(calls))
        if args.fail_after is not None and calls > args.fail_after:
            for line in range(30):
                print(f"traceback line {line}", file=sys.stderr)
            return 3
    for mask_path in sorted(Path(args.masks).glob("*_m.png")):
        stem = mask_path.name[: -len("_m.png")]
        image = np.asarray(Image.open(Path(args.src) / f"{stem}.png").convert("RGB"))
        known = np.asarray(Image.open(mask_path)) == 255
        result = (image.astype(np.int64) + 1) % 256
        result[~known] = image[known].mean(axis=0).astype(np.int64)
        result = result.astype(np.uint8)
        if args.shrink:
            result = result[:, 1:]
        picture = Image.fromarray(result)
        if args.gray:
            picture = picture.convert("L")
        picture.save(Path(args.dst) / f"{stem}_inpainted.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
