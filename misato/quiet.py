"""Silence third-party libraries while they load a model: their log lines and warnings are not the command's.

Hugging Face's libraries report a model load on their own loggers (``Some weights of the model checkpoint …
were not used``: thousands of key names) and as warnings (deprecations). A command checks the load itself and
says what is wrong in one line, so around the load :func:`quiet_loading` raises those loggers to ``ERROR`` and
ignores warnings; the previous logger levels and warning filters are restored afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence

LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate")
"""The root loggers of the libraries that load models (their child loggers inherit the level)."""


@contextlib.contextmanager
def quiet_loading(loggers: Sequence[str] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Within the block, ``loggers`` print only errors, no warning is shown, and diffusers draws no progress bar
    (its "Loading checkpoint shards" of a sharded model). Import the library before the block: importing it sets
    its own logger's level."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    diffusers_logging = sys.modules.get("diffusers.utils.logging")
    bars_were_on = diffusers_logging is not None and diffusers_logging.is_progress_bar_enabled()
    try:
        for name in loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
        if bars_were_on:
            diffusers_logging.disable_progress_bar()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if bars_were_on:
            diffusers_logging.enable_progress_bar()
