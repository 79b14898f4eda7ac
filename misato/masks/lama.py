"""LaMa's evaluation mask generators (``random_{thin,medium,thick}_{256,512}``): thick line strokes or boxes.

Parameters follow REFERENCE.md section 3 (LaMa stores 1 = hole, as we do). A mask is either irregular strokes
or boxes, never both: the kind is chosen with weights 1 (strokes) : ``box_prob`` (boxes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from misato.masks.base import Kinds, MaskSampler, resize_mask


@dataclass(frozen=True)
class LamaConfig:
    """One LaMa mask configuration at its native resolution ``size`` (pixel values refer to it)."""

    size: int
    min_strokes: int
    max_strokes: int
    max_width: int
    max_len: int
    max_angle: int = 4
    box_prob: float = 0.0
    box_margin: int = 0
    box_min_side: int = 0
    box_max_side: int = 0
    box_min_times: int = 0
    box_max_times: int = 0


LAMA_CONFIGS = {
    "thin-512": LamaConfig(512, 4, 70, 20, 100),
    "medium-512": LamaConfig(512, 4, 10, 100, 200, box_prob=0.3, box_margin=0, box_min_side=30, box_max_side=150,
                             box_min_times=1, box_max_times=5),
    "thick-512": LamaConfig(512, 1, 5, 250, 450, box_prob=0.3, box_margin=10, box_min_side=30, box_max_side=300,
                            box_min_times=1, box_max_times=4),
    "thin-256": LamaConfig(256, 4, 50, 10, 40),
    "medium-256": LamaConfig(256, 4, 5, 50, 100, box_prob=0.3, box_margin=0, box_min_side=10, box_max_side=50,
                             box_min_times=1, box_max_times=5),
    "thick-256": LamaConfig(256, 1, 5, 100, 200, box_prob=0.3, box_margin=10, box_min_side=30, box_max_side=150,
                            box_min_times=1, box_max_times=3),
}


def irregular_strokes(rng: np.random.Generator, config: LamaConfig) -> np.ndarray:
    """LaMa's irregular mask at ``config.size``: ``times ∈ [min_strokes, max_strokes + 1]`` strokes.

    (The reference wrapper passes ``max + 1`` to a ``randint(min, max + 1)``, hence the extra stroke.) Each
    stroke starts at a uniform pixel and has ``1 + randint(5)`` segments; a segment has angle
    ``0.01 + randint(max_angle)`` (``2π −`` that on even strokes), length ``10 + randint(max_len)``, width
    ``5 + randint(max_width)``; ``x`` advances by ``length·sin``, ``y`` by ``length·cos``, clipped to
    ``[0, size]``.
    """
    size = config.size
    canvas = np.zeros((size, size), np.uint8)
    times = int(rng.integers(config.min_strokes, config.max_strokes + 2))
    starts = rng.integers(size, size=(times, 2))
    segments = 1 + rng.integers(5, size=times)
    total = int(segments.sum())
    angles = 0.01 + rng.integers(config.max_angle, size=total)
    lengths = 10 + rng.integers(config.max_len, size=total)
    widths = 5 + rng.integers(config.max_width, size=total)
    stroke_of_segment = np.repeat(np.arange(times), segments)
    angles = np.where(stroke_of_segment % 2 == 0, 2 * np.pi - angles, angles)
    dx, dy = lengths * np.sin(angles), lengths * np.cos(angles)
    segment = 0
    for stroke in range(times):
        x, y = int(starts[stroke, 0]), int(starts[stroke, 1])
        for _ in range(int(segments[stroke])):
            end_x = min(max(int(x + dx[segment]), 0), size)
            end_y = min(max(int(y + dy[segment]), 0), size)
            cv2.line(canvas, (x, y), (end_x, end_y), 1, int(widths[segment]))
            x, y = end_x, end_y
            segment += 1
    return canvas.astype(bool)


def random_boxes(rng: np.random.Generator, config: LamaConfig) -> np.ndarray:
    """LaMa's box mask: ``times ∈ [box_min_times, box_max_times]`` boxes, each side uniform in
    ``[box_min_side, min(box_max_side, size − 2·margin)]`` (inclusive), top-left in
    ``[margin, size − margin − side]``."""
    size, margin = config.size, config.box_margin
    max_side = min(config.box_max_side, size - 2 * margin)
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(config.box_min_times, config.box_max_times + 1))):
        w, h = (int(v) for v in rng.integers(config.box_min_side, max_side + 1, size=2))
        x = int(rng.integers(margin, size - margin - w + 1))
        y = int(rng.integers(margin, size - margin - h + 1))
        mask[y : y + h, x : x + w] = True
    return mask


class LamaMask(MaskSampler):
    """One LaMa configuration, drawn at its native size and resized (nearest) to ``size`` if different."""

    def __init__(self, config: LamaConfig, size: int, name: str = ""):
        self.config = config
        self.size = size
        self.name = name

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        use_boxes = self.config.box_prob > 0 and rng.random() < self.config.box_prob / (1.0 + self.config.box_prob)
        native = random_boxes(rng, self.config) if use_boxes else irregular_strokes(rng, self.config)
        return resize_mask(native, self.size), ("lama",)

    def parameters(self) -> dict[str, Any]:
        return {"type": "lama", "config": self.name, **asdict(self.config)}


def nearest_native(size: int) -> int:
    """The LaMa native resolution (256 or 512) closest to ``size`` (ties go to 512)."""
    return 256 if abs(size - 256) < abs(size - 512) else 512


class LamaAnyWidth(MaskSampler):
    """A uniformly chosen LaMa thin / medium / thick configuration at the native size nearest ``size``.

    Used for the "LaMa" share of the training mixtures (which configuration the paper used is not stated).
    """

    def __init__(self, size: int):
        native = nearest_native(size)
        self.size = size
        self.variants = [LamaMask(LAMA_CONFIGS[f"{width}-{native}"], size, f"{width}-{native}")
                         for width in ("thin", "medium", "thick")]

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        return self.variants[int(rng.integers(len(self.variants)))].draw(rng)

    def parameters(self) -> dict[str, Any]:
        return {"type": "lama", "uniform_over": [variant.name for variant in self.variants]}
