"""The pure-PyTorch StyleGAN2 ops against direct references (scipy convolutions, numpy activations)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from baselines import stylegan_ops as ops

NUMPY_ACTIVATIONS = {
    "linear": lambda y: y,
    "relu": lambda y: np.maximum(y, 0),
    "lrelu": lambda y: np.where(y > 0, y, 0.2 * y),
    "tanh": np.tanh,
    "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
    "elu": lambda y: np.where(y > 0, y, np.expm1(y)),
    "selu": lambda y: 1.0507009873554805 * np.where(y > 0, y, 1.6732632423543772 * np.expm1(y)),
    "softplus": lambda y: np.log1p(np.exp(y)),
    "swish": lambda y: y / (1 + np.exp(-y)),
}
DEFAULT_GAINS = {"relu": math.sqrt(2), "lrelu": math.sqrt(2), "swish": math.sqrt(2)}


@pytest.mark.parametrize("act", sorted(NUMPY_ACTIVATIONS))
def test_bias_act_matches_numpy(act):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 4))
    b = rng.normal(size=5)
    y = x + b[None, :, None, None]
    expected = NUMPY_ACTIVATIONS[act](y) * DEFAULT_GAINS.get(act, 1.0)
    got = ops.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_bias_act_dim_alpha_gain_clamp():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 6)) * 3
    b = rng.normal(size=6)
    y = x + b
    expected = np.clip(np.where(y > 0, y, 0.1 * y) * 0.7, -1.5, 1.5)
    got = ops.bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=2, act="lrelu", alpha=0.1, gain=0.7, clamp=1.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert torch.equal(ops.bias_act(torch.from_numpy(x)), torch.from_numpy(x))


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    np.testing.assert_allclose(f.numpy(), expected, rtol=1e-7)
    eight = ops.setup_filter([1, 2, 3, 4, 4, 3, 2, 1])
    assert eight.shape == (8,) and abs(float(eight.sum()) - 1) < 1e-6
    np.testing.assert_allclose(ops.setup_filter([1, 2], gain=4).numpy(), np.outer([1, 2], [1, 2]) / 9 * 4, rtol=1e-6)
    np.testing.assert_allclose(ops.setup_filter([[1, 2], [3, 4]], flip_filter=True).numpy(), [[.4, .3], [.2, .1]],
                               rtol=1e-6)


def reference_upfirdn2d(x, f, up, down, padding, flip_filter=False, gain=1.0):
    """Zero insertion, zero padding (negative = crop), scipy 'valid' convolution, decimation — per channel."""
    x0, x1, y0, y1 = padding
    n, c, h, w = x.shape
    up_x = np.zeros((n, c, h * up, w * up))
    up_x[:, :, ::up, ::up] = x
    padded = np.pad(up_x, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    padded = padded[:, :, max(-y0, 0): padded.shape[2] - max(-y1, 0), max(-x0, 0): padded.shape[3] - max(-x1, 0)]
    kernel = (np.outer(f, f) if f.ndim == 1 else f) * gain
    if flip_filter:
        kernel = kernel[::-1, ::-1]
    out = np.stack([
        np.stack([scipy.signal.convolve2d(padded[i, j], kernel, mode="valid") for j in range(c)]) for i in range(n)
    ])
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,padding,flip,gain,separable",
    [
        (1, 1, (0, 0, 0, 0), False, 1.0, False),
        (2, 1, (2, 1, 2, 1), False, 4.0, False),
        (1, 2, (1, 1, 1, 1), False, 1.0, False),
        (2, 2, (3, 0, 1, 2), True, 2.0, False),
        (1, 1, (-1, 2, 0, -2), True, 1.0, False),
        (3, 2, (1, 2, 2, 1), False, 1.5, True),
    ],
)
def test_upfirdn2d_matches_scipy(up, down, padding, flip, gain, separable):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 7, 9))
    taps = rng.uniform(0.5, 2, size=4)
    f = taps if separable else rng.uniform(0.5, 2, size=(4, 3))
    f_t = torch.from_numpy(f).float()
    got = ops.upfirdn2d(torch.from_numpy(x), f_t, up=up, down=down, padding=list(padding), flip_filter=flip,
                        gain=gain)
    expected = reference_upfirdn2d(x, f_t.double().numpy(), up, down, padding, flip, gain)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_upsample_downsample_filter_shapes_and_dc_gain():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    up = ops.upsample2d(x, f)
    down = ops.downsample2d(x, f)
    same = ops.filter2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4) and same.shape == (1, 2, 8, 8)
    # away from the zero-padded border a constant stays the same constant
    for y in (up[..., 3:-3, 3:-3], down[..., 1:-1, 1:-1], same[..., 2:-2, 2:-2]):
        torch.testing.assert_close(y, torch.full_like(y, 3.0))


def reference_conv2d_resample(x, w, f, up, down, padding, groups):
    """The op's definition: pad once and upsample (filter × up²), correlate with w, then filter and decimate."""
    fh, fw = f.shape
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    kernel = f if up > 1 else np.ones((1, 1))
    x = reference_upfirdn2d(x, kernel, up, 1, (px0, px1, py0, py1), gain=up ** 2 if up > 1 else 1)
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    per_in, per_out = c_in // groups, c_out // groups
    out = np.stack([
        np.stack([
            sum(scipy.signal.correlate2d(x[i, (o // per_out) * per_in + j], w[o, j], mode="valid") for j in range(per_in))
            for o in range(c_out)
        ])
        for i in range(n)
    ])
    if down > 1:
        out = reference_upfirdn2d(out, f, 1, down, (0, 0, 0, 0))
    return out


@pytest.mark.parametrize(
    "k,up,down,groups",
    [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1), (1, 1, 2, 1), (1, 2, 1, 1), (3, 2, 1, 2), (1, 1, 1, 2)],
)
def test_conv2d_resample_matches_definition(k, up, down, groups):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 8, 8))
    w = rng.normal(size=(6, 4 // groups, k, k))
    f = ops.setup_filter([1, 3, 3, 1])
    got = ops.conv2d_resample(torch.from_numpy(x), torch.from_numpy(w), f=f.double(), up=up, down=down,
                              padding=k // 2, groups=groups)
    expected = reference_conv2d_resample(x, w, f.double().numpy(), up, down, k // 2, groups)
    assert got.shape == expected.shape == (2, 6, 8 * up // down, 8 * up // down)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9)
