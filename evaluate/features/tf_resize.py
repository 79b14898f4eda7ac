"""Bilinear resizing exactly as TensorFlow 1.x ``tf.image.resize_bilinear`` (align_corners=False) does it.

TF1 maps output pixel ``i`` to source coordinate ``i * in_size / out_size`` — no half-pixel offset, no
antialiasing — and interpolates between ``floor(src)`` and ``min(floor(src) + 1, in_size - 1)``. The FID
Inception graph (and torch-fidelity, pytorch-fid's TF-compatible mode, Co-Mod-GAN, MAT) resize this way; torch's
``F.interpolate(..., align_corners=False)`` uses half-pixel centres and gives different values.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _source_taps(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Lower index, upper index (both int64 [out_size]) and float32 weight of the upper neighbour."""
    source = torch.arange(out_size, dtype=torch.float64, device=device) * (in_size / out_size)
    lower = source.floor()
    weight = (source - lower).to(torch.float32)
    lower = lower.to(torch.int64).clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower, upper, weight


def resize_bilinear_tf1(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``images`` float [N, C, H, W] (any value range) to ``size`` = (height, width), TF1 convention.

    Returns the input itself when it already has that size. Interpolates along the width first, then the
    height, as TF's kernel does.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected a float [N, C, H, W] tensor, got {images.dtype} of shape {tuple(images.shape)}")
    out_h, out_w = size
    in_h, in_w = images.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return images
    left, right, x_weight = _source_taps(in_w, out_w, images.device)
    top, bottom, y_weight = _source_taps(in_h, out_h, images.device)
    x_weight = x_weight.to(images.dtype)
    y_weight = y_weight.to(images.dtype)
    rows_top = images[:, :, top, :]
    rows_bottom = images[:, :, bottom, :]
    top_line = rows_top[..., left] + (rows_top[..., right] - rows_top[..., left]) * x_weight
    bottom_line = rows_bottom[..., left] + (rows_bottom[..., right] - rows_bottom[..., left]) * x_weight
    return top_line + (bottom_line - top_line) * y_weight[:, None]
