"""``misato fid``: FID between two image folders, no masks (a thin layer over ``evaluate.evaluator.fid_folders``)."""
from __future__ import annotations

import argparse


from misato.cli_choices import BATCH_RANGE, PROTOCOL_CHOICES, PROTOCOL_HELP, WORKER_RANGE, device_name, int_in
from misato.outputs import declare_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fid",
        help="FID between two image folders (no masks), or save a folder's statistics",
        description="FID between the images of A and B (like `python -m pytorch_fid A B`). Either side may be a "
        ".npz statistics file written by --save-stats (it must come from the same protocol and feature weights).",
    )
    parser.add_argument("first", metavar="A", help="image folder or statistics .npz (the reference side)")
    parser.add_argument("second", metavar="B", nargs="?", help="image folder or statistics .npz")
    parser.add_argument("--protocol", default="asuka", choices=PROTOCOL_CHOICES,
                        help=PROTOCOL_HELP + " (default asuka)")
    parser.add_argument("--save-stats", metavar="FILE.npz", help="write A's statistics (mean, covariance, N, "
                        "protocol, weights sha256) to FILE.npz")
    parser.add_argument("--inception-weights", help="Inception weight file (default: found through the registry)")
    parser.add_argument("--weights-dir", help="folder searched first for weight files ($MISATO_WEIGHTS_DIR)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_RANGE), default=8)
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    parser.add_argument("--workers", type=int_in(*WORKER_RANGE), default=0, help="DataLoader worker processes for decoding")
    parser.set_defaults(handler=fid)
    declare_paths(parser, inputs=("first", "second"), outputs=("save_stats",))


def fid(args: argparse.Namespace) -> int:
    from misato.compat import import_evaluator

    from misato.distributed import init_from_env

    import_evaluator()
    from evaluate.evaluator import fid_folders

    device = init_from_env(args.device)
    result = fid_folders(args.first, args.second, protocol=args.protocol, inception_weights=args.inception_weights,
                         weights_dir=args.weights_dir, save_stats=args.save_stats, batch_size=args.batch_size,
                         device=device, workers=args.workers)
    if args.save_stats:
        print(f"saved statistics of {args.first} ({result['n'][0]} images, protocol {result['protocol']}) to "
              f"{args.save_stats}")
    if result["fid"] is not None:
        print(f"FID: {result['fid']:.6f}  (protocol {result['protocol']}, N = {result['n'][0]} / {result['n'][1]})")
    return 0
