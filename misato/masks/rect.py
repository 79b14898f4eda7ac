"""Rectangle and complement-rectangle masks (the paper's two box types; their parameters are not published).

Our documented defaults: a ``rect`` hole is one axis-aligned rectangle whose sides are each a uniform
fraction of the canvas in ``side_range = (0.2, 0.6)``; a ``complement-rect`` mask keeps one such rectangle
(sides in ``(0.3, 0.7)`` of the canvas) and makes **everything outside it** the hole (outpainting-like).
Both rectangles lie fully inside the canvas at a uniform position.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from misato.errors import MisatoError
from misato.masks.base import Kinds, MaskSampler

RECT_SIDE_RANGE = (0.2, 0.6)
COMPLEMENT_SIDE_RANGE = (0.3, 0.7)


def random_rectangle(rng: np.random.Generator, size: int, side_range: tuple[float, float]) -> np.ndarray:
    """Boolean ``[size, size]``, True inside one rectangle with sides ``round(U(side_range)·size)`` (≥ 1 px)."""
    lo, hi = side_range
    h, w = (min(size, max(1, int(round(f * size)))) for f in rng.uniform(lo, hi, size=2))
    y = int(rng.integers(0, size - h + 1))
    x = int(rng.integers(0, size - w + 1))
    mask = np.zeros((size, size), bool)
    mask[y : y + h, x : x + w] = True
    return mask


class RectMask(MaskSampler):
    """One rectangular hole (``complement=False``) or a hole everywhere except one rectangle (``True``)."""

    def __init__(self, size: int, complement: bool = False, side_range: tuple[float, float] | None = None):
        side_range = side_range or (COMPLEMENT_SIDE_RANGE if complement else RECT_SIDE_RANGE)
        if not (0.0 < side_range[0] <= side_range[1] <= 1.0):
            raise MisatoError(f"rectangle side_range must satisfy 0 < lo <= hi <= 1, got {side_range}")
        self.size = size
        self.complement = complement
        self.side_range = (float(side_range[0]), float(side_range[1]))
        self.kind = "complement-rect" if complement else "rect"

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        rectangle = random_rectangle(rng, self.size, self.side_range)
        return (~rectangle if self.complement else rectangle), (self.kind,)

    def parameters(self) -> dict[str, Any]:
        return {"type": self.kind, "side_range": list(self.side_range)}
