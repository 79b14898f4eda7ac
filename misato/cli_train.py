"""``misato train STAGE [flags]``: the ASUKA training stages of :mod:`asuka.train` (``mae``, ``alignment``,
``sd-prompt``, ``decoder``). ``misato train STAGE --help`` lists a stage's flags; the same flags work with
``python -m asuka.train.<stage>`` and under ``accelerate launch``."""
from __future__ import annotations

import argparse

STAGE_NAMES = ("mae", "alignment", "sd-prompt", "decoder")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train an ASUKA component (mae, alignment, sd-prompt, decoder)", description=__doc__,
        add_help=False)
    parser.add_argument("-h", "--help", action="help", help="show this help (misato train STAGE --help: the stage's)")
    parser.add_argument("stage", choices=STAGE_NAMES, help="the training stage")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="the stage's flags (misato train STAGE --help)")
    parser.set_defaults(handler=train_command)


def train_command(args: argparse.Namespace) -> int:
    """Run one stage with :func:`asuka.train.loop.run`."""
    from asuka.train import get_stage
    from asuka.train.loop import run

    record = run(get_stage(args.stage), args.flags)
    state = "finished" if record["complete"] else "stopped (continue with --resume)"
    print(f"train {args.stage}: {state} at step {record['steps']}; losses {record['final_losses']}")
    return 0
