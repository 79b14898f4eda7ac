"""Silence third-party libraries while they load a model: their log lines and warnings are not the command's.

Hugging Face's libraries report a model load on their own loggers (``Some weights of the model checkpoint …
were not used``: thousands of key names) and as warnings (deprecations). A command checks the load itself and
says what is wrong in one line, so around the load :func:`quiet_loading` raises those loggers to ``ERROR`` and
ignores warnings; the previous logger levels and warning filters are restored afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate")
"""The root loggers of the libraries that load models (their child loggers inherit the level)."""


@contextlib.contextmanager
def quiet_loading(loggers: Sequence[str] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Within the block, ``loggers`` print only errors and no warning is shown. Import the library before the
    block: importing it sets its own logger's level."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    try:
        for name in loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
