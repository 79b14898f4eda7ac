"""ASUKA training stages (``misato train <stage>``, ``python -m asuka.train.<stage>``); inference never imports this.

Stages: ``mae`` (:mod:`asuka.train.mae`), ``alignment`` (:mod:`asuka.train.alignment`), ``sd-prompt``
(:mod:`asuka.train.sd_prompt`) and ``decoder`` (:mod:`asuka.train.decoder`), all on the one loop of
:mod:`asuka.train.loop` (its docstring is the stage interface), with flags from :mod:`asuka.train.config` and data
from :mod:`asuka.train.data`. Each stage module defines one :class:`~asuka.train.loop.Stage` subclass named in
:data:`STAGES` and ``main(argv=None)``.
"""
from __future__ import annotations

import importlib

from misato.errors import MisatoError

STAGES = {
    "mae": ("asuka.train.mae", "MAEStage"),
    "alignment": ("asuka.train.alignment", "AlignmentStage"),
    "sd-prompt": ("asuka.train.sd_prompt", "SDPromptStage"),
    "decoder": ("asuka.train.decoder", "DecoderStage"),
}
"""Stage name → (module, class)."""


def get_stage(name: str):
    """The :class:`~asuka.train.loop.Stage` subclass of a stage name."""
    if name not in STAGES:
        raise MisatoError(f"unknown training stage {name!r}; choose one of: {', '.join(STAGES)}")
    module, cls = STAGES[name]
    return getattr(importlib.import_module(module), cls)
