"""What each metric is: its label, direction and whether it has a per-image value.

Tables print ↑/↓ from ``higher_is_better``; bootstrap intervals and paired tests apply to ``per_image`` metrics.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric."""

    name: str
    label: str
    higher_is_better: bool
    per_image: bool
    description: str

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("psnr", "PSNR", True, True, "peak signal-to-noise ratio of the composite, dB, mean over images"),
        MetricInfo("ssim", "SSIM", True, True, "structural similarity of the composite, mean over images"),
        MetricInfo("lpips", "LPIPS", False, True, "learned perceptual distance of the composite, mean over images"),
        MetricInfo("fid", "FID", False, False, "Fréchet Inception distance between composites and ground truth"),
        MetricInfo("uids", "U-IDS", True, False, "unpaired Inception discriminative score (1 - SVM accuracy)"),
        MetricInfo("pids", "P-IDS", True, False, "paired Inception discriminative score"),
        MetricInfo("grad", "Grad", False, True, "gradient difference along the mask boundary, mean over images"),
    )
}
ALL_METRICS: tuple[str, ...] = tuple(METRICS)
