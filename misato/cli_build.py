"""``misato build`` and ``misato verify``: thin layers over :func:`misato.build.build` / :func:`misato.build.verify`."""
from __future__ import annotations

import argparse
import sys

from misato.cli_choices import (BATCH_RANGE, COUNT_RANGE, MASK_SIDE_RANGE, SEED_RANGE, SIDE_RANGE, WORKER_RANGE, device_name,
                                finite_float, int_in)
from misato.errors import MisatoError
from misato.outputs import declare_paths
from misato.resources import available_cpus


def _domain_pair(text: str) -> tuple[str, str]:
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build MISATO from the raw datasets (CLIP features, clustering, crops, masks)",
        description="Build a MISATO folder (image/, mask/, manifest.csv, build.json) from raw datasets.",
    )
    parser.add_argument("--out", required=True, help="output folder (empty or new, unless --resume or --overwrite)")
    parser.add_argument("--size", type=int_in(*MASK_SIDE_RANGE), default=512, help="output side in pixels (default 512)")
    parser.add_argument("--per-domain", type=int_in(*COUNT_RANGE), default=500, help="images (clusters) per domain (default 500)")
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=0, help="clustering and mask seed (default 0)")
    sources = parser.add_argument_group("raw datasets (root or any folder inside)")
    sources.add_argument("--flickr-landscape", metavar="DIR", help="Flickr-Landscape photo folder → landscape")
    sources.add_argument("--matterport", metavar="DIR", help="Matterport3D v1 scans (zipped or unzipped) → indoor")
    sources.add_argument("--megadepth", metavar="DIR", help="MegaDepth_v1 folder → building")
    sources.add_argument("--coco-images", metavar="DIR", help="COCO 2014 images (train2014/…) → background")
    sources.add_argument("--coco-annotations", metavar="FILE", help="COCO instances JSON for --coco-images")
    sources.add_argument(
        "--domain", action="append", type=_domain_pair, default=[], metavar="NAME=DIR",
        help="an extra domain from any image folder (recursive); repeatable; follows the standard domains",
    )
    clip = parser.add_argument_group("CLIP features")
    clip.add_argument("--clip-model", default="ViT-L-14", help="open_clip model name or local-dir:FOLDER (default ViT-L-14)")
    clip.add_argument(
        "--clip-pretrained", default="openai",
        help="openai (OpenAI's ViT-L-14.pt via the weights registry), none (random init) or a checkpoint FILE",
    )
    clip.add_argument("--weights-dir", help="folder holding weight files such as ViT-L-14.pt")
    clip.add_argument("--device", type=device_name, help="torch device (default: cuda if available, else cpu)")
    clip.add_argument("--batch-size", type=int_in(*BATCH_RANGE), default=32, help="images per CLIP forward pass (default 32)")
    clip.add_argument(
        "--workers", type=int_in(*WORKER_RANGE), default=min(4, available_cpus()), help="image-decoding DataLoader workers (default: 4, or the CPUs this process may use if fewer)"
    )
    clip.add_argument("--feature-cache", metavar="DIR", help="feature cache root (default $MISATO_CACHE or ~/.cache/misato; rows go to DIR/features/)")
    masks = parser.add_argument_group("masks")
    masks.add_argument(
        "--mask-ratio-range", type=finite_float, nargs=2, metavar=("LO", "HI"),
        help="hole-ratio range for the mask generator (the paper's value is unknown; default: the generator's)",
    )
    masks.add_argument(
        "--mask-objects", metavar="PATH",
        help="object-shape source for the mask generator (default: --coco-annotations when given)",
    )
    parser.add_argument("--min-side", type=int_in(1, SIDE_RANGE[1]), help="skip images whose shorter side is below this (default size/2)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted build in --out")
    again.add_argument(
        "--overwrite", action="store_true",
        help="delete what a build wrote in --out (image/NNNN.png, mask/NNNN.png, manifest.csv, build.json, "
        ".misato-build/; nothing else) and build afresh",
    )
    parser.set_defaults(handler=build)
    declare_paths(parser, inputs=("flickr_landscape", "matterport", "megadepth", "coco_images", "coco_annotations",
                                  "domain", "mask_objects", "clip_pretrained"), outputs=("out", "feature_cache"))

    checker = subparsers.add_parser(
        "verify", help="check a MISATO folder: layout, sizes, mask values, domain ranges, manifest",
        description="Check a MISATO folder; prints every problem and exits 2 when there is any.",
    )
    checker.add_argument("folder", help="the MISATO folder")
    checker.set_defaults(handler=verify)
    declare_paths(checker, inputs=("folder",))


def build(args: argparse.Namespace) -> int:
    """Handler of ``misato build``."""
    from misato.build import build as run_build
    from misato.distributed import init_from_env, rank_and_world

    device = init_from_env(args.device)  # under torchrun: one rank per process
    report = run_build(
        args.out,
        flickr_landscape=args.flickr_landscape,
        matterport=args.matterport,
        megadepth=args.megadepth,
        coco_images=args.coco_images,
        coco_annotations=args.coco_annotations,
        domains=args.domain,
        size=args.size,
        per_domain=args.per_domain,
        seed=args.seed,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        feature_cache=args.feature_cache,
        resume=args.resume,
        overwrite=args.overwrite,
        mask_ratio_range=tuple(args.mask_ratio_range) if args.mask_ratio_range else None,
        mask_objects=args.mask_objects,
        min_side=args.min_side,
        weights_dir=args.weights_dir,
    )
    if rank_and_world()[0] != 0:
        return 0  # rank 0 writes the output and reports
    if report.already_complete:
        print(f"{report.out}: the build there is already complete (build.json exists)")
        return 0
    counts = ", ".join(f"{name} {count}" for name, count in report.counts.items())
    print(f"{report.out}: {sum(report.counts.values())} images ({counts}); {len(report.skipped)} raw files skipped")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Handler of ``misato verify``."""
    from misato.build import verify as run_verify

    problems = run_verify(args.folder)
    for problem in problems:
        print(problem)
    if problems:
        raise MisatoError(f"{args.folder}: {len(problems)} problem(s), listed above")
    print(f"{args.folder}: OK", file=sys.stderr)
    return 0
