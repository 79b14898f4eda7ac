"""Array ↔ tensor steps shared by the adapters of StyleGAN-family networks (MAT, Co-Mod-GAN).

Those networks take images in [-1, 1] at a fixed size (or a multiple of it) and a mask; the runner hands over
``uint8 [H, W, 3]`` images and ``bool [H, W]`` masks with True = hole. :func:`signed_inputs` pads and converts,
:func:`paste_back` crops a network's quantised output and restores the known pixels bit for bit. Each adapter keeps
its own quantisation (upstream's rounding differs: MAT rounds, Co-Mod-GAN truncates) and mask polarity.
"""
from __future__ import annotations

import numpy as np


def signed_inputs(image: np.ndarray, hole: np.ndarray, multiple: int, device):
    """``(images_in [1, 3, H', W'] float32 in [-1, 1], known [1, 1, H', W'] float32 with 1 = known)``.

    Height and width are padded at the bottom/right to a multiple of ``multiple`` by symmetric reflection of the
    image; the padding counts as known. ``x / 127.5 - 1`` maps 0..255 to [-1, 1].
    """
    import torch

    pad_h, pad_w = -hole.shape[0] % multiple, -hole.shape[1] % multiple
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    known = np.pad(~hole, ((0, pad_h), (0, pad_w)), constant_values=True)
    images_in = torch.from_numpy(padded).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    return images_in, torch.from_numpy(known).to(device)[None, None].float()


def paste_back(filled: np.ndarray, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``filled`` (``uint8 [H', W', 3]``, ``H' ≥ H``, ``W' ≥ W``) cropped to the image, known pixels copied from
    ``image``: ``uint8 [H, W, 3]``."""
    result = np.array(filled[: hole.shape[0], : hole.shape[1]])
    result[~hole] = image[~hole]
    return result
