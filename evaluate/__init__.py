"""MISATO-Bench evaluator: inpainting metrics exactly as the published protocols compute them.

Layers: ``evaluate.functional`` (pure metric functions), ``evaluate.features`` (feature networks),
``evaluate.protocols`` (named bundles), the streaming folder evaluator and comparison tables
(``evaluate.compare``) on top; ``evaluate.schema`` defines the run folder they share.

Importing the package is cheap: the names below are loaded on first use, so reading run folders
(``misato compare``) never imports torch.

Note: Hugging Face also publishes a package named ``evaluate``; the two cannot share an environment.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from misato.compat import HF_EVALUATE_MESSAGE, hf_evaluate_installed

__misato__ = True

if hf_evaluate_installed():
    raise ImportError(HF_EVALUATE_MESSAGE, name=__name__)

_LAZY = {
    "EvaluationResult": "evaluate.evaluator",
    "evaluate_folder": "evaluate.evaluator",
    "fid_folders": "evaluate.evaluator",
    "format_summary": "evaluate.evaluator",
    "InpaintingMetrics": "evaluate.metrics",
    "MaskWarning": "evaluate.metrics",
    "PROTOCOLS": "evaluate.protocols",
    "get_protocol": "evaluate.protocols",
}
"""Public name → the module defining it (imported on first access)."""

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from evaluate.evaluator import EvaluationResult, evaluate_folder, fid_folders, format_summary
    from evaluate.metrics import InpaintingMetrics, MaskWarning
    from evaluate.protocols import PROTOCOLS, get_protocol


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
