"""``misato evaluate``: score a folder of inpainting outputs (a thin layer over ``evaluate.evaluate_folder``)."""
from __future__ import annotations

import argparse

from misato.cli_choices import (BATCH_RANGE, METRIC_NAMES, PROTOCOL_CHOICES, PROTOCOL_HELP, WORKER_RANGE, device_name,
                                int_in)
from misato.outputs import declare_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score inpainting outputs: PSNR, SSIM, LPIPS, FID, U-IDS, P-IDS, Grad",
        description="Score PRED_DIR against the ground truth. Writes OUT/per_image.csv, OUT/summary.json and "
        "OUT/summary.csv and prints the summary table.",
    )
    parser.add_argument("--pred", required=True, help="folder of predictions <name>.png, one per ground-truth image")
    parser.add_argument("--gt", required=True, help="MISATO root (image/, mask/) or a folder of ground-truth images")
    parser.add_argument("--out", required=True, help="run folder to write (must not lie inside an input folder)")
    parser.add_argument("--mask", help="mask folder (default: GT/mask when GT is a MISATO root)")
    parser.add_argument("--protocol", default="asuka", choices=PROTOCOL_CHOICES,
                        help=PROTOCOL_HELP + " (default asuka)")
    parser.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRIC_NAMES)}")
    parser.add_argument("--inception-weights", help="Inception weight file (default: found through the registry)")
    parser.add_argument("--alexnet-weights", help="AlexNet weight file for LPIPS (default: through the registry)")
    parser.add_argument("--clip-weights", help="OpenAI CLIP ViT-L-14.pt for the optional clip metric "
                        "(default: through the registry)")
    parser.add_argument("--weights-dir", help="folder searched first for weight files ($MISATO_WEIGHTS_DIR)")
    parser.add_argument("--ids-pca", default=None, help="PCA size before the IDS SVM: N or none (default: protocol's)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_RANGE), default=8)
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    parser.add_argument("--workers", type=int_in(*WORKER_RANGE), default=0, help="DataLoader worker processes for decoding")
    parser.add_argument("--cache-dir", help="feature cache root (default $MISATO_CACHE or ~/.cache/misato)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached ground-truth features")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in OUT")
    parser.add_argument("--method", help="label for this run in tables (default: the prediction folder's name)")
    parser.add_argument("--skip-missing-weights", action="store_true",
                        help="compute the metrics whose weight files are here and say which were skipped and why")
    parser.set_defaults(handler=evaluate)
    declare_paths(parser, inputs=("pred", "gt", "mask"), outputs=("out", "cache_dir"))


def evaluate(args: argparse.Namespace) -> int:
    from misato.compat import import_evaluator

    from misato.distributed import init_from_env

    evaluator = import_evaluator()
    device = init_from_env(args.device)  # joins the process group torchrun/accelerate describe, if any
    result = evaluator.evaluate_folder(
        pred=args.pred,
        gt=args.gt,
        out=args.out,
        mask=args.mask,
        protocol=args.protocol,
        metrics=args.metrics,
        inception_weights=args.inception_weights,
        alexnet_weights=args.alexnet_weights,
        weights_dir=args.weights_dir,
        ids_pca=args.ids_pca,
        batch_size=args.batch_size,
        device=device,
        clip_weights=args.clip_weights,
        workers=args.workers,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        overwrite=args.overwrite,
        method=args.method,
        skip_missing_weights=args.skip_missing_weights,
    )
    print(evaluator.format_summary(result.summary))
    for metric, reason in result.summary.get("skipped", {}).items():
        print(f"Skipped {metric}: {reason}")
    from evaluate.evaluator import comod_route_hint, pypi_fetch_hint
    from evaluate.protocols import get_protocol

    protocol, skipped = get_protocol(args.protocol), list(result.summary.get("skipped", {}))
    for hint in filter(None, (pypi_fetch_hint(protocol, skipped), comod_route_hint(protocol, skipped))):
        print(f"Note: {hint}.")
    return 0
