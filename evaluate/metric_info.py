"""What each metric is and what it needs: the one table the evaluator, the CLI and the tables derive from.

Tables print ↑/↓ from ``higher_is_better``; bootstrap intervals and paired tests apply to ``per_image`` metrics;
``needs`` says what computing it takes (and so which weight files, see :func:`required_weights`).
Light on purpose (no torch): ``misato compare`` imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from misato.errors import MisatoError

NEEDS = ("cpu", "lpips", "features", "clip")
"""``cpu``: per-image numpy code on the composite (and the soft mask); ``lpips``: the protocol's LPIPS network;
``features``: the protocol's feature network (FID and IDS share its features); ``clip``: OpenAI CLIP ViT-L/14."""

CLIP_WEIGHTS = "clip-vit-l-14-openai"
"""The weights registry entry of the CLIP score's network (every protocol)."""
FEATURE_DIM = 2048
"""Width of the Inception features both protocols use."""
IDS_MIN_SAMPLES = 5 * FEATURE_DIM
"""Below this many real + fake samples (2·N) the training-set accuracy behind U-IDS/P-IDS is optimistic
(REFERENCE 4.3): the evaluator warns and tables flag the run."""


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric."""

    name: str
    label: str
    higher_is_better: bool
    per_image: bool
    needs: str
    description: str
    optional: bool = False
    """Computed only when asked for by name (not part of the default set)."""

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("psnr", "PSNR", True, True, "cpu", "peak signal-to-noise ratio of the composite, dB, mean over images"),
        MetricInfo("ssim", "SSIM", True, True, "cpu", "structural similarity of the composite, mean over images"),
        MetricInfo("lpips", "LPIPS", False, True, "lpips", "learned perceptual distance of the composite, mean over images"),
        MetricInfo("fid", "FID", False, False, "features", "Fréchet Inception distance between composites and ground truth"),
        MetricInfo("uids", "U-IDS", True, False, "features", "unpaired Inception discriminative score (1 - SVM accuracy)"),
        MetricInfo("pids", "P-IDS", True, False, "features", "paired Inception discriminative score"),
        MetricInfo("grad", "Grad", False, True, "cpu", "gradient difference along the mask boundary, mean over images"),
        MetricInfo("kid", "KID", False, False, "features", "kernel Inception distance (unbiased MMD², cubic "
                   "polynomial kernel, mean over seeded subsets as torch-fidelity)", optional=True),
        MetricInfo("clip", "CLIP", True, True, "clip", "cosine of CLIP ViT-L/14 embeddings of prediction and ground "
                   "truth, both black outside the hole (the official cal_clip_score.py), mean over images",
                   optional=True),
    )
}
ALL_METRICS: tuple[str, ...] = tuple(METRICS)
DEFAULT_METRICS: tuple[str, ...] = tuple(m for m in ALL_METRICS if not METRICS[m].optional)
"""What is computed when no ``--metrics`` are given: the paper's seven."""
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
"""torch-fidelity's KID defaults; with fewer than 1000 images every subset holds all N (recorded in summary.json)."""


def parse_metrics(metrics: str | list[str] | None) -> list[str]:
    """``"psnr,fid"`` / list / None (:data:`DEFAULT_METRICS`) → validated metric names in canonical order."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = sorted(set(names) - set(ALL_METRICS))
    if unknown or not names:
        raise MisatoError(f"unknown metrics {unknown or names}; choose from {','.join(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in names]


def metrics_needing(metrics: list[str]) -> set[str]:
    """The :data:`NEEDS` entries the given metrics require together."""
    return {METRICS[m].needs for m in metrics}


def required_weights(metric: str, protocol) -> list[str]:
    """Weights registry entries ``metric`` needs under ``protocol`` (an :class:`evaluate.protocols.Protocol`)."""
    needs = METRICS[metric].needs
    if needs == "features":
        return [protocol.feature_weights]
    if needs == "lpips":
        return list(protocol.lpips_weights)
    if needs == "clip":
        return [CLIP_WEIGHTS]
    return []
