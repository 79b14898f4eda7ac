"""The MAT generator (Li et al., CVPR 2022, "Mask-Aware Transformer for Large Hole Image Inpainting") and its files.

Written from the architecture of fenglinglwb/MAT (``networks/mat.py``, ``networks/basic_module.py``) with the
upstream module and parameter names, so ``Places_512_FullData_G.pth`` — the plain state dict of
``Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3)`` that IOPaint distributes — loads
strictly, and so does the ``G_ema`` network of an official StyleGAN-style pickle (``Places_512_FullData.pkl``),
read by :func:`read_stylegan_pickle` without executing any of the code it carries. The custom CUDA ops are replaced
by :mod:`baselines.stylegan_ops`. One departure from upstream: the two random parts of inference (the 16 × 16
bottleneck "dropout", which upstream runs with ``training=True`` even in eval mode, and ``random`` noise) draw from
an explicit ``torch.Generator`` instead of torch's global one. The adapter is :mod:`baselines.mat`.
"""
from __future__ import annotations

import io
import math
import os
import pickle
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import stylegan_ops as ops
from baselines.mat import NOISE_MODES
from misato.checkpoint import data_globals
from misato.errors import MisatoError

OFFICIAL_SEED = 240
"""``generate_image.py`` seeds numpy (and torch) with 240 before drawing the latent."""
RESAMPLE_FILTER = (1, 3, 3, 1)


def nf(stage: int) -> int:
    """Channels of the second-stage encoder/decoder at resolution ``2 ** stage`` (64 at 512, 512 from 64 down)."""
    return {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}[2 ** stage]


# --- StyleGAN2 layers (basic_module.py) ------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: ``act(x @ (w · lr / √in)ᵀ + b · lr)``. ``x``: ``[..., in]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        x = x.matmul((self.weight * self.weight_gain).t())
        return ops.bias_act(x, b, dim=x.ndim - 1, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/down-sampling by 2. ``[N, C_in, H, W]`` →
    ``[N, C_out, H·up/down, W·up/down]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1) -> None:
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ops.ACTIVATIONS[activation].def_gain
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ops.conv2d_resample(x, self.weight * self.weight_gain, f=self.resample_filter, up=self.up,
                                down=self.down, padding=self.padding)
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) convolution, one weight per sample via grouped convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, up: int = 1) -> None:
        super().__init__()
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn([1, out_channels, in_channels, kernel_size, kernel_size]))
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.up = up
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER))
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        style = self.affine(style).view(batch, 1, in_channels, 1, 1)
        weight = self.weight * self.weight_gain * style
        if self.demodulate:
            weight = weight * (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt().view(batch, self.out_channels, 1, 1, 1)
        weight = weight.view(batch * self.out_channels, in_channels, self.kernel_size, self.kernel_size)
        x = ops.conv2d_resample(x.view(1, batch * in_channels, height, width), weight, f=self.resample_filter,
                                up=self.up, padding=self.padding, groups=batch)
        return x.view(batch, self.out_channels, *x.shape[2:])


class StyleConv(nn.Module):
    """Modulated convolution + per-pixel noise + bias + lrelu. Noise: ``const`` the stored ``[res, res]`` map (so only
    for inputs of exactly the network resolution), ``random`` drawn from ``generator``, ``none`` no noise."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", demodulate: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate, up=up)
        self.use_noise = use_noise
        self.resolution = resolution
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.activation = activation
        self.act_gain = ops.ACTIVATIONS[activation].def_gain

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.conv(x, style)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const * self.noise_strength
            else:
                noise = torch.randn([x.shape[0], 1, *x.shape[-2:]], generator=generator, device=x.device,
                                    dtype=x.dtype) * self.noise_strength
            x = x + noise
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain)


class ToRGB(nn.Module):
    """1 × 1 modulated convolution to RGB, added to the upsampled RGB of the previous resolution."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, kernel_size: int = 1,
                 demodulate: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate)
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = ops.bias_act(self.conv(x, style), self.bias)
        if skip is not None:
            if skip.shape != out.shape:
                skip = ops.upsample2d(skip, self.resample_filter)
            out = out + skip
        return out


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNet(nn.Module):
    """z ``[N, z_dim]`` → w broadcast to ``[N, num_ws, w_dim]`` (8 lrelu layers, lr multiplier 0.01, no labels)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        features = [z_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


# --- first stage: the mask-aware transformer (mat.py) ----------------------------------------------------------


def token2feature(x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
    """``[B, H·W, C]`` → ``[B, C, H, W]``."""
    b, _, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, *x_size)


def feature2token(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, H·W, C]``."""
    b, c = x.shape[:2]
    return x.view(b, c, -1).transpose(1, 2)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``[B, H, W, C]`` → ``[B·nW, ws, ws, C]``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """``[B·nW, ws, ws, C]`` → ``[B, H, W, C]``."""
    b = int(windows.shape[0] / (h * w / window_size / window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class Conv2dLayerPartial(nn.Module):
    """Partial convolution: the output is rescaled by the share of valid inputs under the kernel and the validity
    mask ``[N, 1, H, W]`` (1 = valid) is updated to "any valid input under the kernel"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "linear",
                 up: int = 1, down: int = 1) -> None:
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, activation=activation, up=up, down=down)
        self.kernel_size = kernel_size
        self.slide_winsize = kernel_size ** 2
        self.stride = down
        self.padding = kernel_size // 2 if kernel_size % 2 == 1 else 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if mask is None:
            return self.conv(x), None
        with torch.no_grad():
            ones = torch.ones(1, 1, self.kernel_size, self.kernel_size, dtype=x.dtype, device=x.device)
            update_mask = F.conv2d(mask, ones, stride=self.stride, padding=self.padding)
            mask_ratio = self.slide_winsize / (update_mask + 1e-8)
            update_mask = torch.clamp(update_mask, 0, 1)
            mask_ratio = mask_ratio * update_mask
        return self.conv(x) * mask_ratio, update_mask


class WindowAttention(nn.Module):
    """Multi-head attention inside windows on L2-normalised tokens; keys of invalid tokens get −100 (mask-aware),
    and a window becomes valid once any of its tokens is. ``x``: ``[B·nW, N, C]``."""

    def __init__(self, dim: int, window_size: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = FullyConnectedLayer(dim, dim)
        self.k = FullyConnectedLayer(dim, dim)
        self.v = FullyConnectedLayer(dim, dim)
        self.proj = FullyConnectedLayer(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask_windows: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b_, n, c = x.shape
        heads = self.num_heads
        norm_x = F.normalize(x, p=2.0, dim=-1)
        q = self.q(norm_x).reshape(b_, n, heads, c // heads).permute(0, 2, 1, 3)
        k = self.k(norm_x).view(b_, -1, heads, c // heads).permute(0, 2, 3, 1)
        v = self.v(x).view(b_, -1, heads, c // heads).permute(0, 2, 1, 3)
        attn = (q @ k) * self.scale
        if mask is not None:
            n_windows = mask.shape[0]
            attn = attn.view(b_ // n_windows, n_windows, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, n, n)
        if mask_windows is not None:
            key_valid = mask_windows.squeeze(-1).unsqueeze(1).unsqueeze(1)
            attn = attn + key_valid.masked_fill(key_valid == 0, -100.0).masked_fill(key_valid == 1, 0.0)
            with torch.no_grad():
                mask_windows = torch.clamp(torch.sum(mask_windows, dim=1, keepdim=True), 0, 1).repeat(1, n, 1)
        attn = self.softmax(attn)
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x), mask_windows


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = FullyConnectedLayer(in_features, hidden_features, activation="lrelu")
        self.fc2 = FullyConnectedLayer(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def shifted_window_mask(size: tuple[int, int], window_size: int, shift_size: int) -> torch.Tensor:
    """The −100/0 attention bias ``[nW, ws², ws²]`` that keeps shifted windows from mixing wrapped-around regions."""
    h, w = size
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    count = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = count
            count += 1
    windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
    bias = windows.unsqueeze(1) - windows.unsqueeze(2)
    return bias.masked_fill(bias != 0, -100.0).masked_fill(bias == 0, 0.0)


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention, then ``fuse(cat[input, attention])`` and an MLP — MAT's block has no residual
    around the attention and no layer norm. ``x``: ``[B, H·W, C]``; mask ``[B, H·W, 1]`` or None."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        self.attn = WindowAttention(dim, (self.window_size, self.window_size), num_heads)
        self.fuse = FullyConnectedLayer(dim * 2, dim, activation="lrelu")
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        attn_mask = (shifted_window_mask(self.input_resolution, self.window_size, self.shift_size)
                     if self.shift_size > 0 else None)
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int],
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = x_size
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = x.view(b, h, w, c)
        if mask is not None:
            mask = mask.view(b, h, w, 1)
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(-shift, -shift), dims=(1, 2))
        x_windows = window_partition(x, ws).view(-1, ws * ws, c)
        mask_windows = window_partition(mask, ws).view(-1, ws * ws, 1) if mask is not None else None
        if shift == 0:
            bias = None
        elif tuple(x_size) == self.input_resolution:
            bias = self.attn_mask
        else:
            bias = shifted_window_mask(tuple(x_size), ws, shift).to(x)
        attn_windows, mask_windows = self.attn(x_windows, mask_windows, mask=bias)
        x = window_reverse(attn_windows.view(-1, ws, ws, c), ws, h, w)
        if mask is not None:
            mask = window_reverse(mask_windows.view(-1, ws, ws, 1), ws, h, w)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(shift, shift), dims=(1, 2))
        x = x.view(b, h * w, c)
        if mask is not None:
            mask = mask.view(b, h * w, 1)
        x = self.fuse(torch.cat([shortcut, x], dim=-1))
        return self.mlp(x), mask


class PatchMerging(nn.Module):
    """Token resampling by a partial 3 × 3 convolution: ``down`` (``PatchMerging``) or ``up`` (``PatchUpsampling``)."""

    def __init__(self, in_channels: int, out_channels: int, down: int = 1, up: int = 1) -> None:
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels, out_channels, kernel_size=3, activation="lrelu", up=up, down=down)
        self.scale = up / down

    def forward(self, x: torch.Tensor, x_size: tuple[int, int],
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        x = token2feature(x, x_size)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(x, mask)
        x_size = (int(x_size[0] * self.scale), int(x_size[1] * self.scale))
        return feature2token(x), x_size, (feature2token(mask) if mask is not None else None)


class BasicLayer(nn.Module):
    """Optional resampling, ``depth`` transformer blocks (every second one shifted) and a residual partial conv."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 2.0, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio)
            for i in range(depth)
        ])
        self.conv = Conv2dLayerPartial(dim, dim, kernel_size=3, activation="lrelu")

    def forward(self, x: torch.Tensor, x_size: tuple[int, int],
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        if self.downsample is not None:
            x, x_size, mask = self.downsample(x, x_size, mask)
        identity = x
        for block in self.blocks:
            x, mask = block(x, x_size, mask)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(token2feature(x, x_size), mask)
        x = feature2token(x) + identity
        return x, x_size, (feature2token(mask) if mask is not None else None)


def _bottleneck_keep(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Upstream's ``F.dropout(0.5 · ones, training=True)``: 1 (keep the feature) or 0 with probability ½ each.
    Same draws as ``F.dropout`` from the same generator state on CPU."""
    return torch.empty_like(like).bernoulli_(0.5, generator=generator)


class UpStyleBlock(nn.Module):
    """Decoder block layers at resolution ``2 ** res``: a ×2 style conv, a style conv and a ToRGB."""

    def __init__(self, res: int, in_channels: int, out_channels: int, activation: str, style_dim: int,
                 use_noise: bool, demodulate: bool, img_channels: int) -> None:
        super().__init__()
        self.res = res
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, up=2, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, 2 ** res, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim, kernel_size=1, demodulate=False)


class DecStyleBlock(UpStyleBlock):
    """First-stage decoder block: one style for all three layers, the encoder skip added after the ×2 conv."""

    def forward(self, x, img, style, skip, noise_mode="random", generator=None):
        x = self.conv0(x, style, noise_mode=noise_mode, generator=generator)
        x = x + skip
        x = self.conv1(x, style, noise_mode=noise_mode, generator=generator)
        return x, self.toRGB(x, style, skip=img)


class FirstStage(nn.Module):
    """Coarse stage: partial convs down to 64², a 64→16→64 mask-aware transformer (depths 2-3-4-3-2, 6 heads,
    windows 8-16-16-16-8, width 180), a style from the 16² features and w, and a style decoder back to full size."""

    def __init__(self, img_channels: int, img_resolution: int = 256, dim: int = 180, w_dim: int = 512,
                 use_noise: bool = False, demodulate: bool = True, activation: str = "lrelu") -> None:
        super().__init__()
        res = 64
        self.conv_first = Conv2dLayerPartial(img_channels + 1, dim, kernel_size=3, activation=activation)
        down_time = int(np.log2(img_resolution // res))
        self.enc_conv = nn.ModuleList([
            Conv2dLayerPartial(dim, dim, kernel_size=3, down=2, activation=activation) for _ in range(down_time)
        ])
        depths = [2, 3, 4, 3, 2]
        ratios = [1, 1 / 2, 1 / 2, 2, 2]
        window_sizes = [8, 16, 16, 16, 8]
        self.tran = nn.ModuleList()
        for depth, ratio, window_size in zip(depths, ratios, window_sizes):
            res = int(res * ratio)
            if ratio < 1:
                merge = PatchMerging(dim, dim, down=int(1 / ratio))
            elif ratio > 1:
                merge = PatchMerging(dim, dim, up=int(ratio))
            else:
                merge = None
            self.tran.append(BasicLayer(dim, (res, res), depth, num_heads=6, window_size=window_size,
                                        downsample=merge))
        self.down_conv = nn.Sequential(
            *[Conv2dLayer(dim, dim, kernel_size=3, down=2, activation=activation) for _ in range(4)],
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.to_style = FullyConnectedLayer(dim, dim * 2, activation=activation)
        self.ws_style = FullyConnectedLayer(w_dim, dim, activation=activation)
        self.to_square = FullyConnectedLayer(dim, 16 * 16, activation=activation)
        self.dec_conv = nn.ModuleList()
        for _ in range(down_time):
            res *= 2
            self.dec_conv.append(DecStyleBlock(int(np.log2(res)), dim, dim, activation, dim * 3, use_noise,
                                               demodulate, img_channels))

    def forward(self, images_in, masks_in, ws, noise_mode="random", generator=None):
        x = torch.cat([masks_in - 0.5, images_in * masks_in], dim=1)
        skips = []
        x, mask = self.conv_first(x, masks_in)
        skips.append(x)
        for i, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if i != len(self.enc_conv) - 1:
                skips.append(x)
        x_size = tuple(x.shape[-2:])
        x = feature2token(x)
        mask = feature2token(mask)
        mid = len(self.tran) // 2
        for i, block in enumerate(self.tran):
            if i < mid:
                x, x_size, mask = block(x, x_size, mask)
                skips.append(x)
            elif i > mid:
                x, x_size, mask = block(x, x_size, None)
                x = x + skips[mid - i]
            else:
                x, x_size, mask = block(x, x_size, None)
                keep = _bottleneck_keep(x, generator)
                w_style = self.ws_style(ws[:, -1])
                add_n = self.to_square(w_style).unsqueeze(1)
                add_n = F.interpolate(add_n, size=x.size(1), mode="linear", align_corners=False).squeeze(1)
                x = x * keep + add_n.unsqueeze(-1) * (1 - keep)
                gs = self.to_style(self.down_conv(token2feature(x, x_size)).flatten(start_dim=1))
                style = torch.cat([gs, w_style], dim=1)
        x = token2feature(x, x_size).contiguous()
        img = None
        for i, block in enumerate(self.dec_conv):
            x, img = block(x, img, style, skips[len(self.dec_conv) - i - 1], noise_mode=noise_mode,
                           generator=generator)
        return img * (1 - masks_in) + images_in * masks_in


# --- second stage: the style-manipulated CNN (mat.py) ----------------------------------------------------------


class EncConvBlock(nn.Module):
    """Two lrelu convolutions: 1 × 1 then 3 × 3 at the input (upstream ``EncFromRGB``), or 3 × 3 with ×2
    downsampling then 3 × 3 (upstream ``ConvBlockDown``)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str, from_rgb: bool) -> None:
        super().__init__()
        kernel, down = (1, 1) if from_rgb else (3, 2)
        self.conv0 = Conv2dLayer(in_channels, out_channels, kernel_size=kernel, activation=activation, down=down)
        self.conv1 = Conv2dLayer(out_channels, out_channels, kernel_size=3, activation=activation)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class Encoder(nn.Module):
    """Convolutional encoder from full size down to 16²; returns ``{log2(res): features}``."""

    def __init__(self, res_log2: int, img_channels: int, activation: str) -> None:
        super().__init__()
        self.resolution = []
        for i in range(res_log2, 3, -1):
            res = 2 ** i
            self.resolution.append(res)
            block = (EncConvBlock(img_channels * 2 + 1, nf(i), activation, from_rgb=True) if i == res_log2
                     else EncConvBlock(nf(i + 1), nf(i), activation, from_rgb=False))
            setattr(self, f"EncConv_Block_{res}x{res}", block)

    def forward(self, x):
        out = {}
        for res in self.resolution:
            x = getattr(self, f"EncConv_Block_{res}x{res}")(x)
            out[int(np.log2(res))] = x
        return out


class ToStyle(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, activation: str) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *[Conv2dLayer(in_channels, in_channels, kernel_size=3, activation=activation, down=2) for _ in range(3)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_channels, out_channels, activation=activation)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(start_dim=1))


class DecBlockFirstV2(nn.Module):
    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.res = res
        self.conv0 = Conv2dLayer(in_channels, in_channels, kernel_size=3, activation=activation)
        self.conv1 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim, kernel_size=1, demodulate=False)

    def forward(self, x, ws, gs, e_features, noise_mode="random", generator=None):
        x = self.conv0(x) + e_features[self.res]
        x = self.conv1(x, torch.cat([ws[:, 0], gs], dim=1), noise_mode=noise_mode, generator=generator)
        return x, self.toRGB(x, torch.cat([ws[:, 1], gs], dim=1), skip=None)


class DecBlock(UpStyleBlock):
    """Second-stage decoder block: each layer styled by its own w (``ws[:, 2·res − 9 …]``) and the global style."""

    def forward(self, x, img, ws, gs, e_features, noise_mode="random", generator=None):
        r = self.res
        x = self.conv0(x, torch.cat([ws[:, r * 2 - 9], gs], dim=1), noise_mode=noise_mode, generator=generator)
        x = x + e_features[r]
        x = self.conv1(x, torch.cat([ws[:, r * 2 - 8], gs], dim=1), noise_mode=noise_mode, generator=generator)
        return x, self.toRGB(x, torch.cat([ws[:, r * 2 - 7], gs], dim=1), skip=img)


class Decoder(nn.Module):
    def __init__(self, res_log2, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.Dec_16x16 = DecBlockFirstV2(4, nf(4), nf(4), activation, style_dim, use_noise, demodulate, img_channels)
        for res in range(5, res_log2 + 1):
            setattr(self, f"Dec_{2 ** res}x{2 ** res}",
                    DecBlock(res, nf(res - 1), nf(res), activation, style_dim, use_noise, demodulate, img_channels))
        self.res_log2 = res_log2

    def forward(self, x, ws, gs, e_features, noise_mode="random", generator=None):
        x, img = self.Dec_16x16(x, ws, gs, e_features, noise_mode=noise_mode, generator=generator)
        for res in range(5, self.res_log2 + 1):
            x, img = getattr(self, f"Dec_{2 ** res}x{2 ** res}")(x, img, ws, gs, e_features, noise_mode=noise_mode,
                                                                 generator=generator)
        return img


class SynthesisNet(nn.Module):
    """First stage, then an encoder over (mask, composite, known image), bottleneck mixing at 16², a global style
    and a StyleGAN-like decoder with noise; the output is composited with the known pixels."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 3, activation: str = "lrelu",
                 use_noise: bool = True, demodulate: bool = True) -> None:
        super().__init__()
        resolution_log2 = int(np.log2(img_resolution))
        if img_resolution != 2 ** resolution_log2 or img_resolution < 128:
            raise ValueError(f"MAT needs a power-of-two img_resolution >= 128, got {img_resolution}")
        self.num_layers = resolution_log2 * 2 - 3 * 2
        self.img_resolution = img_resolution
        self.resolution_log2 = resolution_log2
        self.first_stage = FirstStage(img_channels, img_resolution=img_resolution, w_dim=w_dim, use_noise=False,
                                      demodulate=demodulate)
        self.enc = Encoder(resolution_log2, img_channels, activation)
        self.to_square = FullyConnectedLayer(w_dim, 16 * 16, activation=activation)
        self.to_style = ToStyle(nf(4), nf(2) * 2, activation)
        self.dec = Decoder(resolution_log2, activation, w_dim + nf(2) * 2, use_noise, demodulate, img_channels)

    def forward(self, images_in, masks_in, ws, noise_mode="random", generator=None, return_stg1=False):
        out_stg1 = self.first_stage(images_in, masks_in, ws, noise_mode=noise_mode, generator=generator)
        x = images_in * masks_in + out_stg1 * (1 - masks_in)
        e_features = self.enc(torch.cat([masks_in - 0.5, x, images_in * masks_in], dim=1))
        fea_16 = e_features[4]
        keep = _bottleneck_keep(fea_16, generator)
        add_n = self.to_square(ws[:, 0]).view(-1, 16, 16).unsqueeze(1)
        add_n = F.interpolate(add_n, size=fea_16.size()[-2:], mode="bilinear", align_corners=False)
        fea_16 = fea_16 * keep + add_n * (1 - keep)
        e_features[4] = fea_16
        gs = self.to_style(fea_16)
        img = self.dec(fea_16, ws, gs, e_features, noise_mode=noise_mode, generator=generator)
        img = img * (1 - masks_in) + images_in * masks_in
        return (img, out_stg1) if return_stg1 else img


class Generator(nn.Module):
    """MAT generator (labels unsupported: ``c_dim`` must be 0, as for every released checkpoint).

    Call ``G(images, masks, z)``: images ``[N, 3, H, W]`` in [-1, 1], masks ``[N, 1, H, W]`` with 1 = known,
    ``H``, ``W`` multiples of ``img_resolution`` (or exactly it), z ``[N, z_dim]``; returns ``[N, 3, H, W]`` in about
    [-1, 1], equal to the input on known pixels. ``generator`` drives the bottleneck dropout and ``random`` noise.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int) -> None:
        super().__init__()
        if c_dim != 0:
            raise ValueError("MAT checkpoints are unconditional (c_dim=0)")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNet(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels)
        self.mapping = MappingNet(z_dim=z_dim, w_dim=w_dim, num_ws=self.synthesis.num_layers)

    def forward(self, images_in: torch.Tensor, masks_in: torch.Tensor, z: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "random", generator: torch.Generator | None = None,
                return_stg1: bool = False):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = self.mapping(z, truncation_psi=truncation_psi)
        return self.synthesis(images_in, masks_in, ws, noise_mode=noise_mode, generator=generator,
                              return_stg1=return_stg1)


# --- reading the official files ---------------------------------------------------------------------------------


class _PickledState:
    """What an object of the official pickle becomes here: the class it named and the attribute dict it saved.

    StyleGAN's persistent classes (``torch_utils.persistence``) pickle the source of their module alongside the
    state; it is kept as text and never executed. ``torch.nn`` containers become this too.
    """

    def __init__(self, class_name: str = "", state: dict | None = None) -> None:
        self.class_name = class_name
        self.state = state or {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _persistent_object(meta: dict) -> _PickledState:
    return _PickledState(str(meta.get("class_name", "")), dict(meta.get("state") or {}))


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    return cls()


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


STYLEGAN_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}
"""What a StyleGAN2-ADA network pickle needs besides the data globals of :mod:`misato.checkpoint`'s restricted
unpickler: persistent objects (as :class:`_PickledState`), ``EasyDict`` (as ``dict``), plain-object reconstruction
and raw-pickled storages (read with ``torch.load(weights_only=True)``)."""


class _StyleGANUnpickler(pickle.Unpickler):
    """Reads a StyleGAN2-ADA-style network pickle (MAT's ``*.pkl``) admitting only data: the globals the toolkit's
    checkpoint reader admits (tensors, numpy scalars/arrays, ``OrderedDict``, sets), :data:`STYLEGAN_GLOBALS`, and
    ``torch.nn`` classes mapped to :class:`_PickledState`. Any other global is refused with its name (unlike a
    Lightning checkpoint, nothing else may be replaced by a placeholder: the whole file is the network)."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self.admitted = {**data_globals(), **STYLEGAN_GLOBALS}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.admitted:
            return self.admitted[module, name]
        if module.startswith("torch.nn.modules."):
            return _PickledState
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (not plain network data)")


def _flatten_module(node: _PickledState, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = node.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is not None and not (kind == "_buffers" and name in skip):
                out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _PickledState):
            _flatten_module(child, f"{prefix}{name}.", out)


def read_stylegan_pickle(path: str | os.PathLike, network: str = "G_ema") -> dict[str, torch.Tensor]:
    """The state dict (parameters and persistent buffers) of ``network`` in an official MAT/StyleGAN2-ADA pickle.

    The pickle's persistent classes carry their module source code; it is never executed (see
    :class:`_StyleGANUnpickler`). ``generate_image.py`` uses ``G_ema``. To keep a state-dict copy:
    ``torch.save(read_stylegan_pickle("Places_512_FullData.pkl"), "mat_places512_G.pth")`` (loads with ``--weights``;
    its bytes, hence its hash, differ from IOPaint's ``Places_512_FullData_G.pth``).

    Raises:
        MisatoError: unreadable file, a refused global (named), or no ``network`` in it.
    """
    try:
        with open(path, "rb") as handle:
            data = _StyleGANUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as error:
        raise MisatoError(f"{path}: cannot read as a StyleGAN network pickle ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get(network), _PickledState):
        found = ", ".join(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
        raise MisatoError(f"{path}: no network {network!r} in the pickle (found: {found})")
    state: dict[str, torch.Tensor] = {}
    _flatten_module(data[network], "", state)
    return state


def read_mat_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A MAT generator state dict from either official file: the ``torch.save`` state dict
    (``Places_512_FullData_G.pth``, read with ``weights_only=True``) or the network pickle (``*.pkl``, ``G_ema``),
    told apart by content (zip archive or raw pickle)."""
    from misato.checkpoint import read_state_dict

    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"PK":
        return read_state_dict(path, "the MAT generator")
    return read_stylegan_pickle(path)


def load_generator(path: str | os.PathLike, img_resolution: int = 512, device: str = "cpu") -> Generator:
    """Build the MAT generator and load ``path`` strictly (a report naming missing/unexpected keys otherwise)."""
    from misato.checkpoint import load_strict

    generator = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=img_resolution, img_channels=3)
    load_strict(generator, read_mat_weights(path), str(path))
    return generator.to(device).eval().requires_grad_(False)


def official_latent(z_dim: int = 512) -> torch.Tensor:
    """The latent of ``generate_image.py``'s first image (and of IOPaint): ``np.random.seed(240)`` then
    ``np.random.randn(1, z_dim)``, drawn from a private ``RandomState`` (numpy's global state is untouched).
    ``float64 [1, z_dim]``, as upstream passes it."""
    return torch.from_numpy(np.random.RandomState(OFFICIAL_SEED).randn(1, z_dim))
