"""Environment checks shared by the CLI and the packages."""
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
