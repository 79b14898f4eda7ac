"""MISATO-Bench evaluator: inpainting metrics exactly as the published protocols compute them.

Layers: ``evaluate.functional`` (pure metric functions), ``evaluate.features`` (feature networks),
``evaluate.protocols`` (named bundles), the streaming folder evaluator and comparison tables on top.

Note: Hugging Face also publishes a package named ``evaluate``; the two cannot share an environment.
"""
from misato.compat import HF_EVALUATE_MESSAGE, hf_evaluate_installed

__misato__ = True

if hf_evaluate_installed():
    raise ImportError(HF_EVALUATE_MESSAGE)

from evaluate.evaluator import EvaluationResult, evaluate_folder, format_summary  # noqa: E402
from evaluate.protocols import PROTOCOLS, get_protocol  # noqa: E402

__all__ = ["EvaluationResult", "PROTOCOLS", "evaluate_folder", "format_summary", "get_protocol"]
