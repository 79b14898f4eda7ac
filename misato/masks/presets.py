"""Named mask presets and :func:`make_generator`, the one entry point that builds a generator from a name.

Each preset has a default hole-ratio range enforced by rejection (``lo < ratio < hi``; see
:class:`~misato.masks.base.RatioFiltered`); ``ratio_range=`` replaces it. For ``comod-*``/``mat-*`` the range
is also Co-Mod-GAN's ``hole_range`` and so scales the stroke/box counts (``coef = min(lo + hi, 1)``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from misato.errors import OPTION, MisatoError
from misato.masks.base import Kinds, MaskSampler, RatioFiltered, check_ratio_range
from misato.masks.comod import COMOD_COUNTS, MAT_COUNTS, RandomMask
from misato.masks.lama import LAMA_CONFIGS, LamaAnyWidth, LamaMask
from misato.masks.mixtures import ASUKA_TRAIN_WEIGHTS, MISATO_WEIGHTS, Mixture
from misato.masks.objects import ObjectMask, open_object_source
from misato.masks.rect import RectMask

MIN_MASK_SIDE = 16
"""The smallest mask side every generator can draw."""
FULL_RANGE = (0.0, 1.0)
"""Rejects only empty and completely full masks (Co-Mod-GAN's default ``hole_range=[0, 1]``)."""
LAMA_RANGE = (0.0, 0.5)
"""LaMa's evaluation-set generation drops masks covering more than half the image."""

Builder = Callable[[str, int, tuple[float, float], "str | os.PathLike | None"], MaskSampler]


@dataclass(frozen=True)
class Preset:
    """A named distribution: ``build(name, size, ratio_range, objects)`` returns the unfiltered sampler."""

    description: str
    default_range: tuple[float, float]
    needs_objects: bool
    build: Builder


def _lama(name, size, ratio_range, objects):
    key = name.removeprefix("lama-")
    return LamaMask(LAMA_CONFIGS[key], size, key)


def _comod(name, size, ratio_range, objects):
    counts = COMOD_COUNTS if name == "comod-512" else MAT_COUNTS[name]
    return RandomMask(size, ratio_range, counts, kind="comod" if name == "comod-512" else "mat")


def _rect(name, size, ratio_range, objects):
    return RectMask(size, complement=name == "complement-rect")


def _object(name, size, ratio_range, objects):
    return ObjectMask(open_object_source(objects, name), size)


def _mixture(name, size, ratio_range, objects):
    weights = ASUKA_TRAIN_WEIGHTS if name == "asuka-train" else MISATO_WEIGHTS
    parts: dict[str, MaskSampler] = {
        "object": _object(name, size, FULL_RANGE, objects),
        "comod": RatioFiltered(RandomMask(size, FULL_RANGE, COMOD_COUNTS), FULL_RANGE),
        "lama": RatioFiltered(LamaAnyWidth(size), FULL_RANGE),
    }
    if "rect" in weights:
        parts["rect"] = RectMask(size)
        parts["complement-rect"] = RectMask(size, complement=True)
    return Mixture(parts, weights)


PRESETS: dict[str, Preset] = {
    **{f"lama-{key}": Preset(f"LaMa random_{key.replace('-', '_')} (strokes or boxes, native {cfg.size} px)",
                             LAMA_RANGE, False, _lama) for key, cfg in LAMA_CONFIGS.items()},
    "comod-512": Preset("Co-Mod-GAN RandomMask (boxes + brush strokes); the range sets hole_range", FULL_RANGE, False, _comod),
    **{name: Preset(f"MAT RandomMask counts {tuple(vars(c).values())}; the range sets hole_range", FULL_RANGE, False, _comod)
       for name, c in MAT_COUNTS.items()},
    "rect": Preset("one rectangular hole, sides U(0.2, 0.6)·size", FULL_RANGE, False, _rect),
    "complement-rect": Preset("hole everywhere outside one rectangle with sides U(0.3, 0.7)·size", FULL_RANGE, False, _rect),
    "object": Preset("one object silhouette (COCO JSON or mask folder), scaled ×U(0.75, 1.25), flipped, placed",
                     FULL_RANGE, True, _object),
    "asuka-train": Preset("ASUKA training mixture: 50% object / 20% comod / 20% lama / 5% rect / 5% complement-rect",
                          FULL_RANGE, True, _mixture),
    "misato": Preset("MISATO mixture: the training mixture without rectangles (5/9 object, 2/9 comod, 2/9 lama)",
                     FULL_RANGE, True, _mixture),
}


@dataclass
class MaskGenerator:
    """A ready-to-sample preset. ``sample(rng)`` → (bool ``[size, size]``, True = hole; kinds)."""

    preset: str
    size: int
    ratio_range: tuple[float, float]
    sampler: RatioFiltered

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        """One mask drawn only from ``rng`` (redrawn until its hole ratio is inside ``ratio_range``)."""
        return self.sampler.draw(rng)

    def parameters(self) -> dict[str, Any]:
        """Preset, size, ratio range and every component's settings (JSON-serialisable)."""
        return {"preset": self.preset, "size": self.size, **self.sampler.parameters()}


def make_generator(preset: str, size: int, ratio_range: tuple[float, float] | None = None,
                   objects: str | os.PathLike | None = None) -> MaskGenerator:
    """Build the generator for a preset name (see :data:`PRESETS`) at ``size`` × ``size`` pixels.

    Args:
        preset: a key of :data:`PRESETS`.
        size: canvas side in pixels (>= 16).
        ratio_range: ``(lo, hi)`` hole-fraction bounds, ``0 <= lo < hi <= 1``; masks are redrawn until
            ``lo < ratio < hi``. None → the preset's documented default.
        objects: COCO instances JSON or object-mask folder, required by ``object``, ``asuka-train``, ``misato``
            (ignored by the other presets).
    Raises:
        MisatoError: unknown preset (the message lists the names), bad size or range, missing object source.
    """
    if preset not in PRESETS:
        raise MisatoError(f"unknown mask preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if not isinstance(size, (int, np.integer)) or size < MIN_MASK_SIDE:
        raise MisatoError(f"{OPTION} must be an integer of at least {MIN_MASK_SIDE} pixels (the mask side), got "
                          f"{size!r}", option="size")
    entry = PRESETS[preset]
    ratio_range = check_ratio_range(ratio_range) or entry.default_range
    sampler = entry.build(preset, int(size), ratio_range, objects)
    return MaskGenerator(preset, int(size), ratio_range, RatioFiltered(sampler, ratio_range))
