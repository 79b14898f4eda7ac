"""``misato masks`` (generate a mask folder) and ``misato mask-stats`` (measure any mask folder)."""
from __future__ import annotations

import argparse

from misato.cli_choices import COUNT_RANGE, MASK_SIDE_RANGE, SEED_RANGE, finite_float, int_in
from misato.outputs import declare_paths


class _HelpWithPresets(argparse.Action):
    """``-h/--help`` that appends the preset names, importing the mask code (and OpenCV) only when help is shown."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from misato.masks.presets import PRESETS

        parser.description += " Presets: " + ", ".join(PRESETS)
        parser.print_help()
        parser.exit()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "masks", help="generate N masks of a preset (NNNNN.png, 255 = hole) plus masks.csv / masks.json",
        description="Generate masks; mask i depends only on (settings, seed, i), so runs are resumable and "
        "bit-identical for equal seeds.", add_help=False,
    )
    parser.add_argument("-h", "--help", action=_HelpWithPresets, help="show this help message and exit")
    parser.add_argument("--preset", required=True, metavar="NAME", help="mask preset (see docs/masks.md)")
    parser.add_argument("--n", type=int_in(*COUNT_RANGE), required=True, help="number of masks")
    parser.add_argument("--size", type=int_in(*MASK_SIDE_RANGE), default=512, help="mask side in pixels (default 512)")
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ratio-range", type=finite_float, nargs=2, metavar=("LO", "HI"),
                        help="keep masks whose hole fraction r satisfies LO < r < HI (default: the preset's)")
    parser.add_argument("--objects", metavar="SOURCE",
                        help="COCO instances JSON or folder of object-mask PNGs (object, asuka-train, misato)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    group.add_argument("--overwrite", action="store_true", help="replace the masks already in --out")
    parser.set_defaults(handler=masks)
    declare_paths(parser, inputs=("objects",), outputs=("out",))

    stats = subparsers.add_parser(
        "mask-stats", help="hole-ratio histogram, quantiles and connected components of a mask folder",
        description="Measure any folder of masks (255 = hole), e.g. the official release's mask/ to calibrate "
        "--ratio-range. Per-kind rows appear when the folder has a masks.csv from `misato masks`.",
    )
    stats.add_argument("folder", help="folder of mask PNG/JPG files")
    stats.add_argument("--out", help="also write the statistics to FILE (.json or .csv)")
    stats.set_defaults(handler=mask_stats)
    declare_paths(stats, inputs=("folder",), outputs=("out",))


def masks(args: argparse.Namespace) -> int:
    """Generate a mask folder (see :func:`misato.masks.generate_masks`)."""
    from misato.masks import generate_masks

    csv_path = generate_masks(args.preset, args.n, args.size, args.seed, args.out, ratio_range=args.ratio_range,
                              objects=args.objects, resume=args.resume, overwrite=args.overwrite)
    print(f"wrote {args.n} masks to {csv_path.parent} (index: {csv_path.name})")
    return 0


def mask_stats(args: argparse.Namespace) -> int:
    """Print (and optionally save) the statistics of a mask folder (see :func:`misato.masks.mask_stats`)."""
    from misato.masks import check_stats_path, format_stats, mask_stats as compute_stats, write_stats

    if args.out:
        check_stats_path(args.out)
    stats = compute_stats(args.folder, progress=True)
    print(format_stats(stats))
    if args.out:
        write_stats(stats, args.out)
    return 0
