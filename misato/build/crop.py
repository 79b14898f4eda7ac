"""Centre-crop to a square and resize: the geometry applied to every selected image (and to COCO foregrounds).

Filter: Pillow ``LANCZOS`` (a 3-lobe windowed sinc whose support widens with the downscale factor, so it is
antialiased when shrinking; Pillow applies it horizontally, rounds to 8 bits, then vertically). Masks and
foregrounds use ``NEAREST`` so they stay binary. The crop keeps the central ``min(H, W)`` square; when the
difference is odd the extra row/column is dropped at the bottom/right.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def center_square_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the central square of an ``height × width`` image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def center_crop(array: np.ndarray) -> np.ndarray:
    """The central square of an ``[H, W, ...]`` array (a view)."""
    top, left, side = center_square_box(*array.shape[:2])
    return array[top : top + side, left : left + side]


def crop_resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` → centre square resized to ``uint8 [size, size, 3]`` (Lanczos)."""
    square = center_crop(image)
    if square.shape[0] == size:
        return np.ascontiguousarray(square)
    resized = Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8).copy()


def crop_resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """``bool [H, W]`` → centre square resized to ``bool [size, size]`` (nearest neighbour)."""
    square = np.ascontiguousarray(center_crop(mask)).astype(np.uint8) * 255
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized) >= 128
