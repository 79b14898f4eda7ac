"""``misato inpaint`` (run any registered method over a MISATO folder) and ``misato asuka assemble``."""
from __future__ import annotations

import argparse
import json
import os

from misato.cli_choices import BATCH_RANGE, COUNT_RANGE, SEED_RANGE, finite_float, int_in
from misato.errors import MisatoError
from misato.outputs import declare_paths

RUNNER_FLAGS = ("method", "data", "mask", "out", "seed", "limit", "batch_size", "resume", "overwrite", "help")


def _shared_options(specs: dict) -> dict:
    """Every option any registered method declares, by name (one flag each); clashing declarations refused."""
    shared: dict = {}
    for spec in specs.values():
        for option in spec.options:
            if option.name in RUNNER_FLAGS:
                raise MisatoError(f"method {spec.name!r} declares option {option.flag}, which misato inpaint "
                                  "itself uses; rename it")
            first = shared.setdefault(option.name, option)
            if first.type is not option.type:
                raise MisatoError(f"option {option.flag} is {first.type.__name__} for one method and "
                                  f"{option.type.__name__} for {spec.name!r}; one flag needs one type")
    return shared


def register(subparsers: argparse._SubParsersAction) -> None:
    from baselines.base import method_specs

    try:
        specs = method_specs()
        options = _shared_options(specs)
        problem = None
    except MisatoError as error:  # a broken plug-in: reported when `misato inpaint` runs, not at --help
        specs, options, problem = {}, {}, error
    parser = subparsers.add_parser(
        "inpaint",
        help="inpaint every image of a MISATO folder with one method (resumable)",
        description="Write PRED_DIR/<name>.png for every image of --data and PRED_DIR/run.json (method, options, "
        "seed, weight hashes, the data read, versions, timings). `misato methods` lists the methods, their flags and "
        "weights; --method also takes package.module:factory (your own method). Under `torchrun` or `accelerate "
        "launch -m misato inpaint ...` every rank takes its share of the images (a bare --device cuda means one GPU "
        "per rank).",
    )
    parser.add_argument("--method", required=True, help=" | ".join(specs) + " | package.module:factory")
    parser.add_argument("--data", required=True, help="MISATO folder (image/, mask/) or an image folder with --mask")
    parser.add_argument("--mask", help="mask folder when --data is a plain image folder")
    parser.add_argument("--out", required=True, help="prediction folder to write")
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=0, help="run seed (per-image seeds derive from it and the name)")
    parser.add_argument("--limit", type=int_in(*COUNT_RANGE), help="only the first N images (sorted by name)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_RANGE),
                        help="images handed to the method at once (default: the method's own, 1 for most; "
                        "--chunk for command)")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    group = parser.add_argument_group("method options", "each applies to the methods named in brackets")
    for name, option in options.items():
        users = [spec.name for spec in specs.values() if spec.option(name) is not None]
        kwargs = ({"action": argparse.BooleanOptionalAction} if option.type is bool
                  else {"type": finite_float if option.type is float else option.type, "metavar": option.name.upper()})
        group.add_argument(option.flag, dest=f"option_{name}", default=None,
                           help=f"{option.help}{_defaults_help(specs, name)} [{', '.join(users)}]", **kwargs)
    parser.set_defaults(handler=inpaint, option_problem=problem)
    declare_paths(parser, inputs=("data", "mask", "option_model"), outputs=("out",))

    asuka = subparsers.add_parser("asuka", help="ASUKA model tools")
    actions = asuka.add_subparsers(dest="action", metavar="ACTION", required=True)
    assemble = actions.add_parser(
        "assemble",
        help="build one from_pretrained-able ASUKA folder from separately obtained checkpoints",
        description="Read every dimension from the SD-inpainting folder's configs and load each checkpoint with a "
        "strict key check. 'none' = fresh initialisation (for training or tests); --decoder kl-vae = plain SD "
        "decoding.",
    )
    assemble.add_argument("--sd", help="diffusers SD-inpainting folder (unet/, vae/, scheduler/)")
    assemble.add_argument("--flux", help="ASUKA-FLUX: diffusers FLUX.1-Fill folder (transformer/, vae/, scheduler/)")
    assemble.add_argument("--asuka-flux", help="ASUKA-FLUX: folder with the released files (docs/asuka-flux.md)")
    assemble.add_argument("--out", required=True, help="new ASUKA folder")
    assemble.add_argument("--mae", default="none", help="MAE-FAR checkpoint (mae_300.pth), an MAE folder or a "
                          "`misato train mae` output folder, or none (default)")
    assemble.add_argument("--alignment", default="none", help="alignment state-dict file, an alignment folder or a "
                          "`misato train alignment` output folder, or none (default)")
    assemble.add_argument("--decoder", default="kl-vae",
                          help="decoder checkpoint (Lightning, decoder.* keys), a diffusers AsymmetricAutoencoderKL "
                          "folder or a `misato train decoder` output folder, kl-vae (default) or none")
    assemble.add_argument("--seed", type=int_in(*SEED_RANGE), default=0, help="seed for freshly initialised parts")
    assemble.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    assemble.set_defaults(handler=asuka_assemble)
    declare_paths(assemble, inputs=("sd", "flux", "asuka_flux", "mae", "alignment", "decoder"), outputs=("out",))


def _defaults_help(specs: dict, name: str) -> str:
    """``"; default X"`` when every method declaring option ``name`` declares default X, else the methods that
    declare one (``"; default hole (torchscript)"``: the others have their own rule, given in their help)."""
    by_default: dict = {}
    for spec in specs.values():
        option = spec.option(name)
        if option is not None:
            by_default.setdefault(option.default, []).append(spec.name)
    declared = {value: users for value, users in by_default.items() if value is not None}
    if len(by_default) == 1:
        return "".join(f"; default {value}" for value in declared)
    return "; default " + ", ".join(f"{value} ({', '.join(users)})" for value, users in declared.items())


def _method_options(args: argparse.Namespace, spec) -> dict:
    """The options given on the command line (``option_*`` attributes), resolved by ``spec``
    (:meth:`baselines.base.MethodSpec.resolve_options`)."""
    return spec.resolve_options({key[len("option_"):]: value for key, value in vars(args).items()
                                 if key.startswith("option_") and key != "option_problem"})


def inpaint(args: argparse.Namespace) -> int:
    """Run one method over ``--data`` into ``--out`` with :func:`baselines.run_method`."""
    from baselines import create_method, run_method
    from baselines.base import get_spec
    from misato.layout import open_pairs

    if args.option_problem is not None:
        raise args.option_problem
    if args.batch_size is not None and args.batch_size < 1:
        raise MisatoError(f"--batch-size must be at least 1, got {args.batch_size}")
    spec = get_spec(args.method)
    options = _method_options(args, spec)
    open_pairs(args.data, args.mask)  # a mistyped --data fails here, before a (possibly multi-GB) model loads
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun / accelerate launch: join the group, one device each
        from misato.distributed import init_from_env

        device = init_from_env(options.get("device", "cpu"))
        if spec.option("device") is not None:
            options["device"] = device
    method = create_method(args.method, **options)
    record = run_method(method, args.data, args.out, seed=args.seed, mask=args.mask, resume=args.resume,
                        overwrite=args.overwrite, limit=args.limit, batch_size=args.batch_size)
    print(f"{record['n_images']} images in {args.out} ({record['seconds_last_session']} s in this session)")
    return 0


def asuka_assemble(args: argparse.Namespace) -> int:
    """Assemble an ASUKA folder with :func:`asuka.assemble.assemble`."""
    from asuka.assemble import assemble

    if (args.sd is None) == (args.flux is None) or (args.flux is None) != (args.asuka_flux is None):
        raise MisatoError("give --sd (ASUKA on SD) or --flux with --asuka-flux (ASUKA-FLUX)")
    if args.flux is not None:
        from asuka.flux.assemble import assemble_flux

        print(json.dumps(assemble_flux(args.flux, args.asuka_flux, args.out, overwrite=args.overwrite), indent=2))
        return 0
    record = assemble(args.sd, args.out, mae=args.mae, alignment=args.alignment, decoder=args.decoder,
                      seed=args.seed, overwrite=args.overwrite)
    fresh = [name for name, entry in record["components"].items() if entry["source"] == "none"]
    print(json.dumps(record, indent=2))
    if fresh:
        print(f"note: {', '.join(fresh)} freshly initialised (untrained): fine for training or tests, "
              "meaningless for inference")
    return 0
