"""Array ↔ tensor steps shared by the tensor adapters (MAT, Co-Mod-GAN, and
:class:`baselines.torchscript.TensorInpainter` behind ``lama``, ``maefar`` and ``torchscript``).

The runner hands over ``uint8 [H, W, 3]`` images and ``bool [H, W]`` masks with True = hole. :func:`pad_symmetric`
pads an array at the bottom/right by symmetric reflection to a multiple of a size; :func:`paste_back` crops a
network's quantised output and restores the known pixels bit for bit. StyleGAN-family networks take images in
[-1, 1] at a fixed size (or a multiple of it): :func:`signed_inputs` pads and converts for them. Each adapter keeps
its own quantisation (upstream's rounding differs: MAT rounds, Co-Mod-GAN truncates) and mask polarity.
"""
from __future__ import annotations

import numpy as np


def bottom_right_padding(height: int, width: int, multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((0, rows), (0, columns))`` that bring ``height × width`` up to multiples of ``multiple`` (``np.pad`` form)."""
    return (0, -height % multiple), (0, -width % multiple)


def pad_symmetric(array: np.ndarray, multiple: int) -> np.ndarray:
    """``array`` (``[H, W]`` or ``[H, W, C]``) padded at the bottom and right by symmetric reflection (the edge row
    repeated, as ``np.pad(mode="symmetric")`` and LaMa's ``pad_img_to_modulo``) to multiples of ``multiple``."""
    pad = bottom_right_padding(*array.shape[:2], multiple)
    return np.pad(array, pad + ((0, 0),) * (array.ndim - 2), mode="symmetric")


def signed_inputs(image: np.ndarray, hole: np.ndarray, multiple: int, device):
    """``(images_in [1, 3, H', W'] float32 in [-1, 1], known [1, 1, H', W'] float32 with 1 = known)``.

    Height and width are padded at the bottom/right to a multiple of ``multiple`` by symmetric reflection of the
    image; the padding counts as known. ``x / 127.5 - 1`` maps 0..255 to [-1, 1].
    """
    import torch

    padded = pad_symmetric(image, multiple)
    known = np.pad(~hole, bottom_right_padding(*hole.shape, multiple), constant_values=True)
    images_in = torch.from_numpy(padded).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    return images_in, torch.from_numpy(known).to(device)[None, None].float()


def paste_back(filled: np.ndarray, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``filled`` (``uint8 [H', W', 3]``, ``H' ≥ H``, ``W' ≥ W``) cropped to the image, known pixels copied from
    ``image``: ``uint8 [H, W, 3]``."""
    result = np.array(filled[: hole.shape[0], : hole.shape[1]])
    result[~hole] = image[~hole]
    return result
