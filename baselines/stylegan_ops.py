"""Pure-PyTorch versions of the StyleGAN2 custom ops used by MAT and Co-Mod-GAN (no CUDA compilation).

NVIDIA's ``torch_utils/ops`` (shipped by fenglinglwb/MAT and the Co-Mod-GAN PyTorch port) compile CUDA kernels for
``upfirdn2d`` and ``bias_act`` and fall back to slow reference code on CPU. This module implements the same
operations from their definitions with standard PyTorch calls, with the same argument conventions, so that networks
written against those ops give the same numbers on any device:

- :func:`setup_filter` — the normalised FIR filter stored as the ``resample_filter`` buffer of every layer;
- :func:`upfirdn2d` — upsample (zero insertion), pad/crop, FIR filter, downsample;
- :func:`upsample2d`, :func:`downsample2d`, :func:`filter2d` — the padding conventions built on it;
- :func:`bias_act` — bias, activation, gain, clamp in one call;
- :func:`conv2d_resample` — convolution with optional filtered up/down-sampling, taking the same routes as the
  upstream op (transposed convolution then filter for ``up``, filter then strided convolution for ``down``).

Tensors are ``[N, C, H, W]`` float; filters are float32 ``[fh, fw]`` (non-separable) or ``[taps]`` (separable).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An activation of :func:`bias_act`: the function, its default ``alpha`` and its default output gain."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
    "relu": Activation(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}
"""Activation name → definition, with the defaults of StyleGAN2's ``bias_act`` (gain √2 for the ReLU family)."""


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a bias along ``dim``, apply ``act``, multiply by ``gain`` and clamp to ``[-clamp, clamp]``.

    Args:
        x: any shape; ``b``: ``[x.shape[dim]]`` or None.
        alpha, gain: None = the activation's defaults (:data:`ACTIVATIONS`).
        clamp: None = no clamping.
    """
    spec = ACTIVATIONS[act]
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, float(spec.def_alpha if alpha is None else alpha))
    gain = float(spec.def_gain if gain is None else gain)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """The FIR filter tensor :func:`upfirdn2d` takes.

    A 1-D list becomes its outer product (``[1, 3, 3, 1]`` → ``[4, 4]``) unless ``separable`` (default: only for 8
    or more taps); ``normalize`` makes it sum to 1; ``gain`` scales the signal (``gain ** (ndim / 2)`` per tap).
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    x, y = value
    return int(x), int(y)


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``p`` → ``(x0, x1, y0, y1)``; accepts ``p``, ``[px, py]`` or ``[x0, x1, y0, y1]``."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(width, height)`` of a filter (1 × 1 for None)."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample each channel (as ``scipy.signal.upfirdn`` in 2-D).

    1. insert ``up - 1`` zeros after every pixel; 2. pad with zeros (negative padding crops), padding given with
    respect to the upsampled image as ``[x0, x1, y0, y1]``; 3. convolve with ``f`` (true convolution;
    ``flip_filter=True`` = correlation), keeping only outputs whose footprint lies inside; 4. keep every
    ``down``-th pixel. ``gain`` scales the output. Output height is
    ``(H * up_y + y0 + y1 - fh) // down_y + 1``.

    Args:
        x: ``[N, C, H, W]``; f: ``[fh, fw]``, ``[taps]`` (separable) or None (identity).
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    x0, x1, y0, y1 = _padding4(padding)

    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))  # conv2d correlates; flipping makes it a convolution
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def filter2d(x: torch.Tensor, f: torch.Tensor, padding: int | Sequence[int] = 0, flip_filter: bool = False,
             gain: float = 1) -> torch.Tensor:
    """Filter ``x`` with ``f``; the output has the input's size (plus ``padding``)."""
    x0, x1, y0, y1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int | Sequence[int] = 2, padding: int | Sequence[int] = 0,
               flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Upsample ``x`` by ``up`` with the FIR filter ``f`` (output ``up`` times the input size, DC gain kept)."""
    upx, upy = _pair(up)
    x0, x1, y0, y1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int | Sequence[int] = 2, padding: int | Sequence[int] = 0,
                 flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Downsample ``x`` by ``down`` after filtering with ``f`` (output 1/``down`` of the input size)."""
    downx, downy = _pair(down)
    x0, x1, y0, y1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | Sequence[int] = 0, groups: int = 1,
          transpose: bool = False, flip_weight: bool = True) -> torch.Tensor:
    """``conv2d`` (or ``conv_transpose2d``); ``flip_weight=False`` makes it a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with optional FIR-filtered up/down-sampling (StyleGAN2's ``conv2d_resample``).

    Padding is given with respect to the upsampled image and applied once. With ``up = 2`` and a ``k × k`` kernel,
    ``padding = k // 2`` gives an output twice the input size; with ``down = 2``, half.

    Args:
        x: ``[N, C_in, H, W]``; w: ``[C_out, C_in // groups, kh, kw]``; f: a filter from :func:`setup_filter`.
    """
    c_out, c_in_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        # A transposed convolution with stride `up` inserts the zeros and convolves in one step; the FIR filter follows.
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, c_out // groups, c_in_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * c_in_group, c_out // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
