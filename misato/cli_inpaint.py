"""``misato inpaint`` (run any registered method over a MISATO folder) and ``misato asuka assemble``."""
from __future__ import annotations

import argparse
import json

from misato.errors import MisatoError

DIFFUSION_METHODS = ("asuka", "sd", "sd-text", "sd-prompt")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inpaint",
        help="inpaint every image of a MISATO folder with one method (resumable)",
        description="Write PRED_DIR/<name>.png for every image of --data and PRED_DIR/run.json (method, options, "
        "seed, weight hashes, versions, timings). Methods: asuka, sd, sd-text, sd-prompt (need --model), "
        "telea, navier-stokes.",
    )
    parser.add_argument("--method", required=True, help="asuka | sd | sd-text | sd-prompt | telea | navier-stokes")
    parser.add_argument("--model", help="model folder: assembled ASUKA folder (asuka) or SD-inpainting folder (sd*)")
    parser.add_argument("--data", required=True, help="MISATO folder (image/, mask/) or an image folder with --mask")
    parser.add_argument("--mask", help="mask folder when --data is a plain image folder")
    parser.add_argument("--out", required=True, help="prediction folder to write")
    parser.add_argument("--steps", type=int, help="denoising steps (diffusion methods; default 50)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (per-image seeds derive from it and the name)")
    parser.add_argument("--prompt-embeds", help="sd-prompt: learned prompt embeddings file (.safetensors/.pt)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance for sd/sd-text (default off)")
    parser.add_argument("--no-paste-back", action="store_true", help="keep the decoder's pixels in the known region")
    parser.add_argument("--device", help="torch device for diffusion methods (default cpu)")
    parser.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.set_defaults(handler=inpaint)

    asuka = subparsers.add_parser("asuka", help="ASUKA model tools")
    actions = asuka.add_subparsers(dest="action", metavar="ACTION", required=True)
    assemble = actions.add_parser(
        "assemble",
        help="build one from_pretrained-able ASUKA folder from separately obtained checkpoints",
        description="Read every dimension from the SD-inpainting folder's configs and load each checkpoint with a "
        "strict key check. 'none' = fresh initialisation (for training or tests); --decoder kl-vae = plain SD "
        "decoding.",
    )
    assemble.add_argument("--sd", required=True, help="diffusers SD-inpainting folder (unet/, vae/, scheduler/)")
    assemble.add_argument("--out", required=True, help="new ASUKA folder")
    assemble.add_argument("--mae", default="none", help="MAE-FAR checkpoint (mae_300.pth) or none (default)")
    assemble.add_argument("--alignment", default="none", help="alignment state-dict file or none (default)")
    assemble.add_argument("--decoder", default="kl-vae",
                          help="decoder checkpoint (Lightning, decoder.* keys) or diffusers AsymmetricAutoencoderKL "
                          "folder, kl-vae (default) or none")
    assemble.add_argument("--seed", type=int, default=0, help="seed for freshly initialised parts")
    assemble.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    assemble.set_defaults(handler=asuka_assemble)


def _method_options(args: argparse.Namespace) -> dict:
    """Options given on the command line, in the adapter's keyword names (unset ones left to its defaults)."""
    options = {
        "model": args.model,
        "steps": args.steps,
        "prompt_embeds": args.prompt_embeds,
        "guidance_scale": args.guidance_scale,
        "device": args.device,
        "paste_back": False if args.no_paste_back else None,
    }
    options = {key: value for key, value in options.items() if value is not None}
    if args.method not in DIFFUSION_METHODS and options:
        flags = ", ".join("--" + key.replace("_", "-") for key in options)
        raise MisatoError(f"method {args.method} takes no {flags}")
    return options


def inpaint(args: argparse.Namespace) -> int:
    """Run one method over ``--data`` into ``--out`` with :func:`baselines.run_method`."""
    from baselines import create_method, run_method
    from misato.layout import open_pairs

    open_pairs(args.data, args.mask)  # a mistyped --data fails here, before a (possibly multi-GB) model loads
    method = create_method(args.method, **_method_options(args))
    record = run_method(method, args.data, args.out, seed=args.seed, mask=args.mask, resume=args.resume,
                        overwrite=args.overwrite, limit=args.limit)
    print(f"{record['n_images']} images in {args.out} ({record['seconds_last_session']} s in this session)")
    return 0


def asuka_assemble(args: argparse.Namespace) -> int:
    """Assemble an ASUKA folder with :func:`asuka.assemble.assemble`."""
    from asuka.assemble import assemble

    record = assemble(args.sd, args.out, mae=args.mae, alignment=args.alignment, decoder=args.decoder,
                      seed=args.seed, overwrite=args.overwrite)
    fresh = [name for name, entry in record["components"].items() if entry["source"] == "none"]
    print(json.dumps(record, indent=2))
    if fresh:
        print(f"note: {', '.join(fresh)} freshly initialised (untrained): fine for training or tests, "
              "meaningless for inference")
    return 0
