"""What every mask generator shares: the sampler contract, hole ratios, ratio-range rejection, resizing.

Polarity: every array here is boolean ``[size, size]`` with **True = hole** (the project convention). The
Co-Mod-GAN and MAT reference code stores 1 = known; nothing here does.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import cv2
import numpy as np

from misato.errors import MisatoError

Kinds = tuple[str, ...]
"""Names of the mask types a sample was built from, e.g. ``("object", "comod")``."""

MAX_ATTEMPTS = 1000
"""Redraws allowed for one mask before a ratio range is declared unreachable."""


class MaskSampler(ABC):
    """Draws one boolean ``[size, size]`` mask (True = hole) from the generator it is given.

    Implementations draw **only** from ``rng``, so equal generator states give equal masks.
    """

    size: int

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        """One unfiltered mask and its kinds."""

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """The settings that define the distribution (written beside generated masks)."""


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels of a boolean mask, in [0, 1]."""
    return float(np.count_nonzero(mask)) / mask.size


def check_ratio_range(ratio_range: tuple[float, float] | list[float] | None, what: str = "--ratio-range") -> tuple[float, float] | None:
    """Validate ``(lo, hi)`` with ``0 <= lo < hi <= 1``; returns it as a float tuple (or None)."""
    if ratio_range is None:
        return None
    try:
        lo, hi = (float(v) for v in ratio_range)
    except (TypeError, ValueError):
        raise MisatoError(f"{what} must be two numbers LO HI, got {ratio_range!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise MisatoError(f"{what} must satisfy 0 <= LO < HI <= 1 (hole fractions), got {lo} {hi}")
    return lo, hi


class RatioFiltered(MaskSampler):
    """Redraw ``inner`` until its hole ratio lies strictly inside ``(lo, hi)`` (Co-Mod-GAN's rule).

    With ``lo = 0`` empty masks are rejected; with ``hi = 1`` full masks are. Raises
    :class:`MisatoError` after :data:`MAX_ATTEMPTS` draws, naming the range as unreachable.
    """

    def __init__(self, inner: MaskSampler, ratio_range: tuple[float, float], max_attempts: int = MAX_ATTEMPTS):
        self.inner = inner
        self.size = inner.size
        self.ratio_range = check_ratio_range(ratio_range)
        self.max_attempts = max_attempts

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        lo, hi = self.ratio_range
        for _ in range(self.max_attempts):
            mask, kinds = self.inner.draw(rng)
            if lo < hole_ratio(mask) < hi:
                return mask, kinds
        raise MisatoError(
            f"no mask with a hole ratio strictly inside ({lo}, {hi}) in {self.max_attempts} draws; "
            "this range is (nearly) unreachable for this generator — widen --ratio-range "
            "(use `misato mask-stats` on a sample to see its ratio distribution)"
        )

    def parameters(self) -> dict[str, Any]:
        return {**self.inner.parameters(), "ratio_range": list(self.ratio_range)}


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean square mask to ``[size, size]`` (identity when equal)."""
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def randint_or_zero(rng: np.random.Generator, high: int) -> int:
    """``randint(high)`` as in the reference code, but 0 when ``high <= 0`` (numpy would raise)."""
    return int(rng.integers(high)) if high > 0 else 0
