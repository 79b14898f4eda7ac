"""Centre crop + resize checked pixel-wise against an independent numpy Lanczos resampler."""
from __future__ import annotations

import numpy as np
import pytest

from misato.build.crop import center_square_box, crop_resize_image, crop_resize_mask
from tests.helpers import smooth_image


def lanczos3(x: np.ndarray) -> np.ndarray:
    """The Lanczos window with 3 lobes: sinc(x)·sinc(x/3) on |x| < 3."""
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def resample_axis(values: np.ndarray, out_size: int) -> np.ndarray:
    """Resample axis 0 of ``values`` (float) to ``out_size`` samples, antialiased: the kernel is stretched by the
    downscale factor, pixel centres at ``i + 0.5``, weights normalised to sum 1."""
    in_size = values.shape[0]
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    out = np.empty((out_size,) + values.shape[1:])
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 3 * stretch + 0.5), 0), min(int(centre + 3 * stretch + 0.5), in_size)
        taps = np.arange(lo, hi)
        weights = lanczos3((taps + 0.5 - centre) / stretch)
        weights /= weights.sum()
        out[i] = np.tensordot(weights, values[lo:hi], axes=(0, 0))
    return out


def reference_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Horizontal pass, round to 8 bits, vertical pass, round (the order and quantisation Pillow documents)."""
    horizontal = np.clip(np.rint(resample_axis(image.astype(np.float64).transpose(1, 0, 2), size)), 0, 255)
    vertical = resample_axis(horizontal.transpose(1, 0, 2), size)
    return np.clip(np.rint(vertical), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape, size", [((90, 120), 48), ((121, 80), 32), ((40, 40), 64), ((64, 100), 64)])
def test_crop_resize_matches_independent_lanczos(shape, size):
    rng = np.random.default_rng(sum(shape) + size)
    image = smooth_image(rng, max(shape))[: shape[0], : shape[1]]
    image = np.clip(image.astype(int) + rng.integers(-40, 41, size=image.shape), 0, 255).astype(np.uint8)
    ours = crop_resize_image(image, size)
    top, left, side = center_square_box(*shape)
    expected = reference_resize(image[top : top + side, left : left + side], size)
    difference = np.abs(ours.astype(int) - expected.astype(int))
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    # Pillow uses fixed-point weights: at most one grey level apart, almost always equal
    assert difference.max() <= 1 and (difference == 0).mean() > 0.97


def test_center_square_box_odd_difference_drops_bottom_right():
    assert center_square_box(5, 8) == (0, 1, 5)
    assert center_square_box(9, 4) == (2, 0, 4)
    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    assert np.array_equal(crop_resize_image(image, 5), image[:, 1:6])


def test_mask_nearest_stays_binary_and_aligned():
    mask = np.zeros((60, 80), bool)
    mask[10:30, 20:50] = True  # inside the central 60×60 square (columns 10–69)
    resized = crop_resize_mask(mask, 30)
    assert resized.dtype == np.bool_ and resized.shape == (30, 30)
    # 2× reduction, nearest: output pixel (y, x) samples source (2y + 1, 2x + 1) of the crop
    ys, xs = np.mgrid[0:30, 0:30]
    assert np.array_equal(resized, mask[:, 10:70][2 * ys + 1, 2 * xs + 1])
