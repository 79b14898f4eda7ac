"""COCO 2014 annotations for the *background* domain: holes never cover annotated objects (REFERENCE 2)."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from misato.errors import MisatoError

MAX_MASK_ATTEMPTS = 50
"""How many masks are drawn for one COCO image before the builder gives up on it."""


def load_coco(annotations: str | os.PathLike):
    """Load an instances JSON with pycocotools (its progress prints are swallowed).

    Raises:
        MisatoError: missing file, invalid JSON, or no ``images``/``annotations`` lists.
    """
    from pycocotools.coco import COCO

    path = Path(annotations).expanduser()
    if not path.is_file():
        raise MisatoError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MisatoError(f"{path}: not a valid JSON file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise MisatoError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def foreground_mask(coco, image_id: int) -> np.ndarray:
    """Union of every annotated instance of an image, crowd regions included.

    Returns:
        ``bool [height, width]`` (the size the annotation file gives), True = object pixel.
    """
    info = coco.imgs[image_id]
    foreground = np.zeros((int(info["height"]), int(info["width"])), dtype=bool)
    for annotation in coco.imgToAnns.get(image_id, []):
        foreground |= coco.annToMask(annotation).astype(bool)
    return foreground


def background_mask(generator, rng: np.random.Generator, foreground: np.ndarray, min_ratio: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """Draw masks until one still has a hole ratio >= ``min_ratio`` after removing the foreground.

    Args:
        generator: anything with ``sample(rng) -> (bool [S, S] mask, kinds)``.
        rng: the image's own generator (draws continue on it, so results are reproducible).
        foreground: ``bool [S, S]`` object pixels, already cropped/resized like the image.
        min_ratio: the lower end of the ratio range (a hole must keep at least one pixel when 0).
    Returns:
        ``(mask, kinds)`` with ``mask & foreground`` all False.
    Raises:
        MisatoError: no acceptable mask within :data:`MAX_MASK_ATTEMPTS` draws.
    """
    for _ in range(MAX_MASK_ATTEMPTS):
        mask, kinds = generator.sample(rng)
        mask = np.asarray(mask, dtype=bool) & ~foreground
        if mask.any() and mask.mean() >= min_ratio:
            return mask, tuple(kinds)
    raise MisatoError(
        f"no background mask with hole ratio >= {min_ratio:.3f} after {MAX_MASK_ATTEMPTS} draws "
        f"(objects cover {foreground.mean():.1%} of the image)"
    )
