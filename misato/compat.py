"""Environment checks shared by the CLI and the packages: Hugging Face's ``evaluate`` clashes with ours.

:func:`misato.cli.main` turns any clash (see :func:`is_evaluator_clash`) into exit 2 with
:data:`HF_EVALUATE_MESSAGE`, whichever subcommand imports ``evaluate``; library code calls :func:`import_evaluator`.
"""
from __future__ import annotations

from importlib import metadata

from misato.errors import MisatoError

HF_EVALUATE_MESSAGE = (
    "Hugging Face's `evaluate` package is installed in this environment; it uses the same top-level name "
    "`evaluate` as MISATO-Bench's evaluator, so one overwrites the other. Use a separate virtual environment "
    "for misato-bench, or `pip uninstall evaluate` and then reinstall misato-bench."
)


def hf_evaluate_installed() -> bool:
    """True when a distribution called ``evaluate`` (Hugging Face's) is installed beside misato-bench."""
    try:
        metadata.distribution("evaluate")
    except metadata.PackageNotFoundError:
        return False
    return True


def is_evaluator_clash(error: ImportError) -> bool:
    """True when ``error`` comes from importing ``evaluate`` while Hugging Face's package is installed.

    Our ``evaluate/__init__`` refuses to load beside it (``ImportError(..., name="evaluate")``); when Hugging Face's
    package is found first, ``evaluate.compare`` and the like do not exist, or its own imports fail (a frame of the
    traceback runs in an ``evaluate`` module).
    """
    from_evaluate = (error.name or "").partition(".")[0] == "evaluate"
    frame = error.__traceback__
    while frame is not None and not from_evaluate:
        from_evaluate = frame.tb_frame.f_globals.get("__name__", "").partition(".")[0] == "evaluate"
        frame = frame.tb_next
    return from_evaluate and hf_evaluate_installed()


def import_evaluator():
    """Import MISATO's ``evaluate`` package, or raise a :class:`MisatoError` naming the clash."""
    try:
        import evaluate
    except ImportError as error:
        if hf_evaluate_installed():
            raise MisatoError(HF_EVALUATE_MESSAGE) from None
        raise MisatoError(f"cannot import MISATO's evaluator: {error}") from None
    if not getattr(evaluate, "__misato__", False):
        raise MisatoError(f"{HF_EVALUATE_MESSAGE} (imported `evaluate` from {getattr(evaluate, '__file__', '?')})")
    return evaluate
