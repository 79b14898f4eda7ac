"""Evaluation run folders for the table tests, written by the evaluator itself.

The per-image rows go through :func:`evaluate.evaluator.summarise` (which computes the means and the domain and
hole-ratio breakdowns) and :func:`evaluate.evaluator.write_run_files` (the writer behind ``misato evaluate --out``).
The image-set scores (FID, U-IDS, P-IDS) need Inception features; they are given as chosen numbers instead and
put into ``summary.json``'s metrics in the evaluator's order.
"""
from __future__ import annotations

from pathlib import Path

from evaluate.evaluator import write_run_files, summarise
from evaluate.metric_info import ALL_METRICS
from evaluate.protocols import PROTOCOLS

NAMES = ("0000", "0500", "1000", "1500")
"""One image per MISATO domain (landscape, indoor, building, background)."""
MASK_RATIOS = (0.05, 0.15, 0.35, 0.65)
"""One image per hole-ratio bin 0-10%, 10-20%, 30-40%, 60%+."""
DOMAINS = ("landscape", "indoor", "building", "background")


def write_run(root: Path, relative: str, per_image: dict[str, list[float]], set_metrics: dict[str, float] | None = None,
              protocol: str = "asuka", side: int = 512, method: str | None = None) -> Path:
    """``root/relative``: a finished run folder over :data:`NAMES` with the given per-image values."""
    rows = [
        {"name": name, **{m: float(values[i]) for m, values in per_image.items()}, "mask_ratio": MASK_RATIOS[i],
         "domain": DOMAINS[i]}
        for i, name in enumerate(NAMES)
    ]
    summary = summarise(rows, {}, {}, list(per_image), PROTOCOLS[protocol], None, {(side, side)},
                        {"lpips-alex": "a" * 64}, method or relative)
    summary["metrics"].update(set_metrics or {})
    summary["metrics"] = {m: summary["metrics"][m] for m in ALL_METRICS if m in summary["metrics"]}
    out = root / relative
    out.mkdir(parents=True)
    write_run_files(out, rows, summary, list(summary["metrics"]))
    return out
