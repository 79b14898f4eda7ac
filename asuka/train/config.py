"""Training configuration: command-line flags, ``--config FILE`` setting the same flags, the resolved config.

Every stage's flags live in one ``argparse`` parser (the common flags below plus the stage's own, added by its
``add_arguments``). ``--config file.yaml|json`` holds ``{flag: value}`` (``batch-size`` or ``batch_size``); its
values become the parser's defaults, so flags given on the command line win. The *resolved config* is every flag's
value except the :data:`RUNTIME_KEYS` (how to run, not what to train): it is saved in every checkpoint and in
``train.json``, and ``--resume`` with a different resolved config is refused, naming the differing keys (the
checkpoint, log and validation intervals, :data:`RESUMABLE_KEYS`, may change).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from misato.cli_choices import SEED_RANGE, SIDE_RANGE, int_in
from misato.errors import MisatoError
from misato.resources import available_cpus

RUNTIME_KEYS = frozenset({"config", "out", "resume", "overwrite", "num_workers", "stop_at_step", "progress"})
"""Flags that change how a run executes but not its result (not compared on ``--resume``)."""
RESUMABLE_KEYS = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "validate_every", "val_samples",
                            "val_inference_steps"})
"""Saved in the resolved config but free to change on ``--resume`` (they do not change the trained weights)."""
REQUIRED = ("data", "out")


def probability(text: str) -> float:
    """An ``argparse`` type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are :class:`MisatoError` (one line, exit 2 in the CLI)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise MisatoError(message)  # the command line printing it names the program


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every stage shares (data, optimisation, precision, checkpoints, logging)."""
    run = parser.add_argument_group("run")
    run.add_argument("--config", help="YAML or JSON file of {flag: value} setting these same flags")
    run.add_argument("--data", help="training images: a folder (searched recursively; Places2's layout works), a "
                     "MISATO build (its image/), a saved Hugging Face dataset folder, or hf:NAME for a hub dataset")
    run.add_argument("--data-split", default="train", help="split of a Hugging Face dataset")
    run.add_argument("--image-column", default=None, help="image column of a Hugging Face dataset (default: the "
                     "first Image column)")
    run.add_argument("--out", help="output folder (checkpoints, logs, samples, the trained component, train.json)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a training run in --out")
    run.add_argument("--seed", type=int_in(*SEED_RANGE), default=0,
                     help="seed of initialisation, data order, masks and noise")
    run.add_argument("--stop-at-step", type=positive_int, default=None,
                     help="stop after this step with a checkpoint, as if killed (resume later with --resume)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")

    data = parser.add_argument_group("data")
    data.add_argument("--resolution", type=int_in(*SIDE_RANGE), default=512, help="training crop side in pixels")
    data.add_argument("--crop", choices=("resize", "random"), default="resize",
                      help="resize: short side to --resolution then a random square; random: a random square at the "
                      "image's own scale")
    data.add_argument("--small-images", choices=("error", "resize"), default="error",
                      help="an image smaller than the crop (--crop random): refuse it, or upscale its short side")
    data.add_argument("--mask-preset", default="asuka-train", help="mask preset of misato.masks (drawn on the fly)")
    data.add_argument("--objects", default=None, help="object silhouettes for the object-shape masks (COCO instances "
                      "JSON or a folder of masks); required by asuka-train")
    data.add_argument("--mask-ratio", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                      help="hole-ratio range of the masks (default: the preset's)")
    data.add_argument("--num-workers", type=non_negative_int, default=min(4, available_cpus()),
                      help="data loader worker processes (default: 4, or the CPUs this process may use if fewer)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=positive_int, default=8, help="images per process per micro-batch")
    optim.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimiser step")
    optim.add_argument("--max-steps", type=positive_int, default=1000, help="optimiser steps")
    optim.add_argument("--lr", type=positive_float, default=1e-4, help="peak learning rate")
    optim.add_argument("--lr-schedule", default="constant",
                       choices=("constant", "constant_with_warmup", "linear", "cosine"), help="diffusers get_scheduler")
    optim.add_argument("--warmup-steps", type=non_negative_int, default=0, help="learning-rate warm-up steps")
    optim.add_argument("--weight-decay", type=non_negative_float, default=1e-2, help="AdamW weight decay")
    optim.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"))
    optim.add_argument("--adam-eps", type=positive_float, default=1e-8)
    optim.add_argument("--max-grad-norm", type=non_negative_float, default=1.0, help="gradient clipping (0 = off)")
    optim.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")

    logs = parser.add_argument_group("checkpoints and logs")
    logs.add_argument("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints")
    logs.add_argument("--keep-checkpoints", type=positive_int, default=3, help="checkpoints kept (the last K)")
    logs.add_argument("--log-every", type=positive_int, default=10, help="steps between log rows")
    logs.add_argument("--validate-every", type=non_negative_int, default=1000,
                      help="steps between validation sample grids (0 = only at the end)")
    logs.add_argument("--val-samples", type=non_negative_int, default=4,
                      help="images in the validation grid (0 = no validation)")


def _convert(action: argparse.Action, value: Any, key: str, source: str) -> Any:
    """A config-file value through the flag's own type (lists for ``nargs``), errors naming the key."""
    def one(item):
        if action.type is None or item is None:
            return item
        try:
            return action.type(str(item) if not isinstance(item, str) else item)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise MisatoError(f"{source}: {key}: {error}") from None

    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise MisatoError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if action.nargs not in (None, "?"):
        if not isinstance(value, (list, tuple)):
            raise MisatoError(f"{source}: {key} takes a list, got {value!r}")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise MisatoError(f"{source}: {key} takes {action.nargs} values, got {len(value)}")
        return [one(item) for item in value]
    if action.choices is not None and value not in action.choices:
        raise MisatoError(f"{source}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return one(value)


def read_config_file(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``{dest: value}`` from a YAML/JSON config file, every key a flag of ``parser``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise MisatoError(f"--config {path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise MisatoError(f"--config {path}: not UTF-8 text (byte {error.start} cannot be decoded); save it as "
                          "UTF-8 YAML or JSON") from None
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(text)
        except ValueError as error:
            raise MisatoError(f"--config {path}: not valid JSON ({error})") from None
    else:
        import yaml

        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise MisatoError(f"--config {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise MisatoError(f"--config {path}: expected a mapping of flag: value, got {type(content).__name__}")
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, value in content.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in actions or dest in ("help", "config"):
            raise MisatoError(f"--config {path}: unknown key {key!r} (not a flag of this stage)")
        values[dest] = _convert(actions[dest], value, str(key), f"--config {path}")
    return values


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with ``--config`` values as defaults; ``--data`` and ``--out`` are required from either."""
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        parser.set_defaults(**read_config_file(first.config, parser))
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in REQUIRED if getattr(args, name) is None]
    if missing:
        raise MisatoError(f"{parser.prog}: {' and '.join(missing)} required (on the command line or in --config)")
    if args.mask_ratio is not None:
        from misato.masks.base import check_ratio_range

        args.mask_ratio = list(check_ratio_range(args.mask_ratio, "--mask-ratio"))
    args.adam_betas = [float(beta) for beta in args.adam_betas]
    if not all(0.0 <= beta < 1.0 for beta in args.adam_betas):
        raise MisatoError(f"--adam-betas must lie in [0, 1), got {args.adam_betas}")
    return args


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """Every flag's value except :data:`RUNTIME_KEYS`, JSON-ready (tuples as lists), sorted by key."""
    config = {}
    for key, value in sorted(vars(args).items()):
        if key in RUNTIME_KEYS:
            continue
        config[key] = list(value) if isinstance(value, tuple) else value
    return config


def differing_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key (saved → current)"`` for every key whose value differs (or exists in only one), except
    :data:`RESUMABLE_KEYS`."""
    keys = sorted((set(saved) | set(current)) - RESUMABLE_KEYS)
    return [f"{key} ({saved.get(key)!r} → {current.get(key)!r})" for key in keys
            if saved.get(key) != current.get(key)]
