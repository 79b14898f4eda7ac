"""Co-Mod-GAN ``RandomMask`` and MAT's variants of it: random boxes unioned with free-form brush strokes.

Parameters follow REFERENCE.md section 3. The reference code stores 1 = known; here True = hole.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from misato.masks.base import Kinds, MaskSampler, check_ratio_range, randint_or_zero


@dataclass(frozen=True)
class BrushParams:
    """The free-form brush of Co-Mod-GAN / MAT (angles in radians, widths in pixels)."""

    min_steps: int = 4
    max_steps: int = 18  # exclusive, as in randint(4, 18)
    mean_angle: float = 2 * math.pi / 5
    angle_range: float = 2 * math.pi / 15
    min_width: float = 12
    max_width: float = 48


def brush_strokes(rng: np.random.Generator, size: int, max_strokes: int, brush: BrushParams = BrushParams()) -> np.ndarray:
    """Up to ``max_strokes - 1`` (``randint(max_strokes)``) zig-zag strokes on a ``[size, size]`` bool canvas.

    Each stroke: ``randint(min_steps, max_steps)`` steps from a uniform start; even steps turn by
    ``2π − U(angle_min, angle_max)``, odd ones by ``U(angle_min, angle_max)``; step length
    ``clip(N(R, R // 2), 0, 2R)`` with ``R = sqrt(2)·size / 8``; one width ``int(U(min_width, max_width))``
    for the polyline and the filled discs at its vertices, drawn with Pillow as the reference does (OpenCV's
    thick lines come out 1–2 px wider than their nominal width). The whole canvas is then flipped vertically and
    horizontally with probability 0.5 each.
    """
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    radius = math.sqrt(2 * size * size) / 8
    for _ in range(randint_or_zero(rng, max_strokes)):
        steps = int(rng.integers(brush.min_steps, brush.max_steps))
        angle_min = brush.mean_angle - rng.uniform(0, brush.angle_range)
        angle_max = brush.mean_angle + rng.uniform(0, brush.angle_range)
        turns = rng.uniform(angle_min, angle_max, size=steps)
        turns[0::2] = 2 * math.pi - turns[0::2]
        points = [(int(rng.integers(0, size)), int(rng.integers(0, size)))]
        lengths = np.clip(rng.normal(radius, radius // 2, size=steps), 0, 2 * radius)
        for angle, length in zip(turns.tolist(), lengths.tolist()):
            x = min(max(points[-1][0] + length * math.cos(angle), 0), size)
            y = min(max(points[-1][1] + length * math.sin(angle), 0), size)
            points.append((int(x), int(y)))
        width = int(rng.uniform(brush.min_width, brush.max_width))
        draw.line(points, fill=1, width=width)
        for x, y in points:
            draw.ellipse((x - width // 2, y - width // 2, x + width // 2, y + width // 2), fill=1)
    mask = np.asarray(canvas, dtype=bool)
    if rng.random() > 0.5:
        mask = mask[::-1]
    if rng.random() > 0.5:
        mask = mask[:, ::-1]
    return np.ascontiguousarray(mask)


def random_boxes(rng: np.random.Generator, mask: np.ndarray, max_boxes: int, max_side: int) -> None:
    """Cut ``randint(max_boxes)`` boxes with sides ``randint(max_side)`` into ``mask`` (in place, True = hole).

    A box of width ``w`` starts at ``x ∈ [−w//2, size − w + w//2)`` and is clipped to the canvas, so boxes
    may hang over the border (same for ``y``/``h``).
    """
    size = mask.shape[0]
    for _ in range(randint_or_zero(rng, max_boxes)):
        w, h = randint_or_zero(rng, max_side), randint_or_zero(rng, max_side)
        x = int(rng.integers(-(w // 2), size - w + w // 2))
        y = int(rng.integers(-(h // 2), size - h + h // 2))
        mask[max(y, 0) : min(y + h, size), max(x, 0) : min(x + w, size)] = True


@dataclass(frozen=True)
class RandomMaskCounts:
    """Maximum counts (before × coef) of half-size boxes, full-size boxes and brush strokes."""

    half_boxes: int
    full_boxes: int
    strokes: int


COMOD_COUNTS = RandomMaskCounts(10, 5, 20)
MAT_COUNTS = {
    "mat-512": RandomMaskCounts(5, 3, 9),
    "mat-512-small": RandomMaskCounts(3, 2, 4),
    "mat-256": RandomMaskCounts(4, 2, 8),
    "mat-256-small": RandomMaskCounts(2, 2, 3),
}


class RandomMask(MaskSampler):
    """Co-Mod-GAN's ``RandomMask(s, hole_range)`` (or MAT's with other counts), without the rejection loop.

    ``coef = min(lo + hi, 1)`` scales the counts; wrap in :class:`~misato.masks.base.RatioFiltered` with the
    same ``hole_range`` to get the reference's redraw-until-inside behaviour.
    """

    def __init__(self, size: int, hole_range: tuple[float, float] = (0.0, 1.0), counts: RandomMaskCounts = COMOD_COUNTS,
                 kind: str = "comod", brush: BrushParams = BrushParams()):
        self.size = size
        self.hole_range = check_ratio_range(hole_range)
        self.counts = counts
        self.kind = kind
        self.brush = brush
        coef = min(self.hole_range[0] + self.hole_range[1], 1.0)
        self.max_counts = (int(counts.half_boxes * coef), int(counts.full_boxes * coef), int(counts.strokes * coef))

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        half_boxes, full_boxes, strokes = self.max_counts
        mask = np.zeros((self.size, self.size), bool)
        random_boxes(rng, mask, half_boxes, self.size // 2)
        random_boxes(rng, mask, full_boxes, self.size)
        mask |= brush_strokes(rng, self.size, strokes, self.brush)
        return mask, (self.kind,)

    def parameters(self) -> dict[str, Any]:
        return {"type": self.kind, "hole_range_for_coef": list(self.hole_range), "counts": asdict(self.counts),
                "max_counts_after_coef": list(self.max_counts), "brush": asdict(self.brush)}
