"""Per-image metrics of protocol ``asuka`` (REFERENCE 4.1), on numpy arrays.

All functions take 8-bit images as read from disk (``uint8 [H, W, 3]``, RGB) so that the exact arithmetic
of the protocol (division by 255, float64) happens here and nowhere else.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from misato.io import binarize_mask

PSNR_EPS = 1e-7
"""Added to the MSE before the logarithm, as the official scripts do (caps PSNR at 70 dB)."""

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
"""RGB → gray weights used for SSIM (MATLAB ``rgb2gray``; not skimage's ``rgb2gray``)."""

GRAD_CANNY_THRESHOLDS = (100, 200)


def _unit(image: np.ndarray) -> np.ndarray:
    """``uint8`` → float64 in [0, 1]."""
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    return image.astype(np.float64) / 255.0


def composite(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paste the prediction into the hole: ``pred·m + gt·(1 − m)`` with a binary mask.

    Args:
        pred, gt: ``uint8 [H, W, 3]``.
        mask: ``[H, W]`` mask in any form :func:`misato.io.binarize_mask` accepts (True/255 = hole).
    Returns:
        ``uint8 [H, W, 3]``: prediction inside the hole, ground truth elsewhere.
    """
    hole = binarize_mask(mask)
    return np.where(hole[..., None], pred, gt)


def psnr(pred: np.ndarray, gt: np.ndarray, eps: float = PSNR_EPS) -> float:
    """PSNR in dB of one image: ``−10·log10(MSE + eps)``, MSE over all ``H·W·C`` values in [0, 1].

    Args:
        pred, gt: ``uint8 [H, W, C]``.
    """
    mse = float(np.mean((_unit(pred) - _unit(gt)) ** 2))
    return float(-10.0 * np.log10(mse + eps))


def to_gray(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` → float64 ``[H, W]`` in [0, 1] with :data:`LUMA_WEIGHTS`."""
    unit = _unit(image)
    r, g, b = LUMA_WEIGHTS
    return r * unit[..., 0] + g * unit[..., 1] + b * unit[..., 2]


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Grayscale SSIM of one image with skimage's defaults (7×7 uniform window, K1 0.01, K2 0.03, sample
    covariance, border cropped), ``data_range=1``.

    Args:
        pred, gt: ``uint8 [H, W, 3]``, at least 7×7.
    """
    return float(structural_similarity(to_gray(pred), to_gray(gt), data_range=1.0))


def mask_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels in [0, 1]."""
    return float(binarize_mask(mask).mean())


def grad_error(pred: np.ndarray, gt: np.ndarray, mask_uint8: np.ndarray) -> float:
    """Gradient error along the hole boundary (Grad, lower is better).

    The prediction is composited with the *soft* mask ``m = mask/255``; boundary pixels are
    ``Canny(mask, 100, 200)``; for each RGB channel, Sobel (3×3, float64, on the 0–255 scale) x/y gradients of
    composite and ground truth give, per boundary pixel, the Euclidean norm of the gradient difference
    ``|∇composite − ∇gt|``; the channel's value is its mean over boundary pixels (0 without boundary). The
    image's value is the mean over channels (averaging over images then channels is the same number).

    Args:
        pred, gt: ``uint8 [H, W, 3]``.
        mask_uint8: ``uint8 [H, W]``, 255 = hole (soft values allowed).
    """
    if mask_uint8.dtype != np.uint8:
        raise TypeError(f"expected a uint8 mask, got {mask_uint8.dtype}")
    edges = cv2.Canny(mask_uint8, *GRAD_CANNY_THRESHOLDS) > 0
    if not edges.any():
        return 0.0
    # Only the boundary's bounding box plus one pixel (the 3×3 Sobel's reach) is filtered: every boundary pixel
    # sees the same neighbours as in the whole image (and the same reflected border where the box touches the
    # image's edge), so the values are the whole-image ones bit for bit (tested).
    rows, cols = np.flatnonzero(edges.any(axis=1)), np.flatnonzero(edges.any(axis=0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    soft = mask_uint8[box].astype(np.float64)[..., None] / 255.0
    # Sobel is linear: ∇composite − ∇gt = ∇((pred − gt)·m), since composite − gt = (pred − gt)·m.
    difference = (pred[box].astype(np.float64) - gt[box].astype(np.float64)) * soft
    edges = edges[box]
    per_channel = []
    for channel in range(difference.shape[2]):
        dx = cv2.Sobel(difference[..., channel], cv2.CV_64F, 1, 0, ksize=3)
        dy = cv2.Sobel(difference[..., channel], cv2.CV_64F, 0, 1, ksize=3)
        per_channel.append(float(np.hypot(dx[edges], dy[edges]).mean()))
    return float(np.mean(per_channel))
