"""Mixtures of mask types: the ASUKA training mixture and the MISATO benchmark mixture (paper 3.1, 4).

One component is chosen per mask by weight. An ``object`` mask is additionally unioned with a Co-Mod mask
with probability ``union_probs["comod"]`` and, independently, with a LaMa mask with
``union_probs["lama"]`` (0.25 each in the paper), so its kinds may read ``("object", "comod", "lama")``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from misato.masks.base import Kinds, MaskSampler

ASUKA_TRAIN_WEIGHTS = {"object": 0.50, "comod": 0.20, "lama": 0.20, "rect": 0.05, "complement-rect": 0.05}
MISATO_WEIGHTS = {kind: weight for kind, weight in ASUKA_TRAIN_WEIGHTS.items() if "rect" not in kind}
OBJECT_UNION_PROBS = {"comod": 0.25, "lama": 0.25}


class Mixture(MaskSampler):
    """Pick one component by weight (weights are renormalised); union extras onto ``object`` masks."""

    def __init__(self, components: dict[str, MaskSampler], weights: dict[str, float],
                 union_probs: dict[str, float] = OBJECT_UNION_PROBS):
        self.components = components
        self.names = list(weights)
        total = float(sum(weights.values()))
        self.probabilities = np.array([weights[name] / total for name in self.names])
        self.cumulative = np.cumsum(self.probabilities)
        self.union_probs = {name: p for name, p in union_probs.items() if "object" in weights}
        self.size = next(iter(components.values())).size

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        index = min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.names) - 1)
        mask, kinds = self.components[self.names[index]].draw(rng)
        if self.names[index] == "object":
            for extra, probability in self.union_probs.items():
                if rng.random() < probability:
                    extra_mask, extra_kinds = self.components[extra].draw(rng)
                    mask = mask | extra_mask
                    kinds = kinds + extra_kinds
        return mask, kinds

    def parameters(self) -> dict[str, Any]:
        return {
            "type": "mixture",
            "weights": {name: float(p) for name, p in zip(self.names, self.probabilities)},
            "object_union_probs": self.union_probs,
            "components": {name: sampler.parameters() for name, sampler in self.components.items()},
        }
