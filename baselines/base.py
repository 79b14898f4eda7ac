"""The method contract and the name → factory table used by ``misato inpaint``."""
from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from misato.errors import MisatoError


class InpaintingMethod(abc.ABC):
    """An inpainting method.

    Subclasses set ``name`` and implement :meth:`inpaint_one`; methods that batch override :meth:`inpaint`.
    """

    name: str = ""

    @abc.abstractmethod
    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        """Fill the hole of one image.

        Args:
            image: ``uint8 [H, W, 3]`` RGB.
            mask: ``bool [H, W]``, True = hole.
            seed: the image's own seed (see :func:`image_seed`): same seed → same output.
        Returns:
            ``uint8 [H, W, 3]`` RGB of the same size.
        """

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """Fill a batch (default: one image at a time)."""
        return [self.inpaint_one(i, m, s) for i, m, s in zip(images, masks, seeds)]

    def describe(self) -> dict[str, Any]:
        """What to record in ``run.json``: options and weight hashes (override to add them)."""
        return {"method": self.name}


def image_seed(seed: int, name: str) -> int:
    """A per-image seed from the run seed and the file stem, so a resumed run reproduces the same pixels."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_FACTORIES: dict[str, Callable[..., InpaintingMethod]] = {}


def register_method(name: str, factory: Callable[..., InpaintingMethod]) -> None:
    """Make ``factory(**options)`` available as method ``name``."""
    _FACTORIES[name] = factory


def _load_builtin_adapters() -> None:
    import baselines.opencv  # noqa: F401  (registers its methods)
    import baselines.diffusion  # noqa: F401  (asuka, sd, sd-text, sd-prompt)


def available_methods() -> list[str]:
    """Names accepted by :func:`create_method`."""
    _load_builtin_adapters()
    return sorted(_FACTORIES)


def create_method(name: str, **options: Any) -> InpaintingMethod:
    """Instantiate method ``name`` with adapter-specific ``options``."""
    _load_builtin_adapters()
    if name not in _FACTORIES:
        raise MisatoError(f"unknown method {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](**options)
