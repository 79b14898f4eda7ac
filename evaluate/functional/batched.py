"""Tensor-first, batched wrappers over the exact per-image metrics (torchmetrics-style functional layer).

Inputs are NCHW tensors as models produce them: images float32 in [0, 1] or uint8; masks ``[N, 1, H, W]`` or
``[N, H, W]`` (bool, uint8 0–255 with 255 = hole, or float in [0, 1]). Float images are quantised to 8 bits
once (:func:`to_uint8_images`, ``round(clamp(x, 0, 1)·255)``) and float masks to ``round(m·255)``, which is
what writing them as PNG gives, so the numbers equal the folder evaluator's bit for bit; the arithmetic itself
is the float64 code of :mod:`evaluate.functional.image_metrics`, image by image. Outputs are float64 ``[N]``
numpy arrays (one value per image).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from evaluate.functional.image_metrics import composite, grad_error, mask_ratio, psnr, ssim
from misato.errors import MisatoError


def quantize(images: Tensor) -> Tensor:
    """float [N, C, H, W] in [0, 1] → uint8 tensor, ``round(clamp(x, 0, 1)·255)`` (the one float → 8-bit rule)."""
    return images.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def to_uint8_images(images: Tensor, what: str = "images") -> np.ndarray:
    """``[N, 3, H, W]`` float in [0, 1] or uint8 (any device) → numpy ``uint8 [N, H, W, 3]``."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise MisatoError(f"{what}: expected an [N, 3, H, W] tensor, got {shape}")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise MisatoError(f"{what}: expected float in [0, 1] or uint8, got {images.dtype}")
        images = quantize(images)
    return images.detach().permute(0, 2, 3, 1).cpu().numpy()


def to_uint8_masks(masks: Tensor, what: str = "masks") -> np.ndarray:
    """``[N, 1, H, W]`` or ``[N, H, W]`` bool / uint8 / float in [0, 1] → numpy ``uint8 [N, H, W]``, 255 = hole."""
    if not torch.is_tensor(masks) or masks.ndim not in (3, 4) or (masks.ndim == 4 and masks.shape[1] != 1):
        shape = tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__
        raise MisatoError(f"{what}: expected an [N, 1, H, W] or [N, H, W] tensor, got {shape}")
    masks = masks.detach().reshape(masks.shape[0], *masks.shape[-2:])
    if masks.dtype == torch.bool:
        masks = masks.to(torch.uint8) * 255
    elif masks.is_floating_point():
        if masks.numel() and (masks.min() < 0 or masks.max() > 1):
            raise MisatoError(f"{what}: float mask values must lie in [0, 1], got [{masks.min()}, {masks.max()}]")
        masks = masks.mul(255.0).round().to(torch.uint8)
    elif masks.dtype != torch.uint8:
        raise MisatoError(f"{what}: unsupported mask dtype {masks.dtype}; use bool, uint8 (255 = hole) or float")
    return masks.cpu().numpy()


def _pairs(pred: Tensor, gt: Tensor, mask: Tensor | None = None):
    pred_u8, gt_u8 = to_uint8_images(pred, "pred"), to_uint8_images(gt, "gt")
    mask_u8 = to_uint8_masks(mask) if mask is not None else None
    if pred_u8.shape != gt_u8.shape or (mask_u8 is not None and mask_u8.shape != gt_u8.shape[:3]):
        raise MisatoError(f"pred {tuple(pred.shape)}, gt {tuple(gt.shape)} and mask "
                          f"{None if mask is None else tuple(mask.shape)} must agree in N, H and W")
    return pred_u8, gt_u8, mask_u8


def composite_batch(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``uint8 [N, 3, H, W]``: prediction in the (binarised) hole, ground truth elsewhere."""
    pred_u8, gt_u8, mask_u8 = _pairs(pred, gt, mask)
    merged = np.stack([composite(p, g, m) for p, g, m in zip(pred_u8, gt_u8, mask_u8)])
    return torch.from_numpy(merged).permute(0, 3, 1, 2)


def psnr_batch(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> np.ndarray:
    """Per-image PSNR (dB) of the composite (of ``pred`` itself when ``mask`` is None)."""
    pred_u8, gt_u8, mask_u8 = _pairs(pred, gt, mask)
    merged = pred_u8 if mask_u8 is None else [composite(p, g, m) for p, g, m in zip(pred_u8, gt_u8, mask_u8)]
    return np.array([psnr(c, g) for c, g in zip(merged, gt_u8)], dtype=np.float64)


def ssim_batch(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> np.ndarray:
    """Per-image grayscale SSIM of the composite (of ``pred`` itself when ``mask`` is None)."""
    pred_u8, gt_u8, mask_u8 = _pairs(pred, gt, mask)
    merged = pred_u8 if mask_u8 is None else [composite(p, g, m) for p, g, m in zip(pred_u8, gt_u8, mask_u8)]
    return np.array([ssim(c, g) for c, g in zip(merged, gt_u8)], dtype=np.float64)


def grad_batch(pred: Tensor, gt: Tensor, mask: Tensor) -> np.ndarray:
    """Per-image Grad (soft-mask composite, boundary of the mask)."""
    pred_u8, gt_u8, mask_u8 = _pairs(pred, gt, mask)
    return np.array([grad_error(p, g, m) for p, g, m in zip(pred_u8, gt_u8, mask_u8)], dtype=np.float64)


def mask_ratio_batch(mask: Tensor) -> np.ndarray:
    """Per-image hole fraction in [0, 1]."""
    return np.array([mask_ratio(m) for m in to_uint8_masks(mask)], dtype=np.float64)
