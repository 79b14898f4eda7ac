"""The Co-Mod-GAN generator (Zhao et al., ICLR 2021) in the layout of the PyTorch port's ``*_net_G_ema.pth`` files.

Written from the architecture of zengxianyu/co-mod-gan-pytorch (``models/networks/co_mod_gan.py`` for the
generator, ``models/networks/stylegan2.py`` for rosinality-style StyleGAN2 layers) with the port's module and
parameter names, so its converted checkpoints (``co-mod-gan-places2-050000_net_G_ema.pth``, the FFHQ 512/1024
files) load strictly — buffers included: every blur and upsampling layer stores its FIR kernel as ``kernel``. The
custom CUDA ops the port compiles at import are replaced by :mod:`baselines.stylegan_ops`. The adapter is
:mod:`baselines.comod`.

Generator ``G(images, masks, z)`` with the port's conventions: images ``[N, 3, R, R]`` in [-1, 1], masks
``[N, 1, R, R]`` with **1 = hole**, z ``[N, 512]``; the encoder sees ``cat([0.5 - mask, image · (1 − mask)])``
(the official TF model's ``mask − 0.5`` with its 1 = known mask). ``R`` is fixed by the checkpoint: the encoder ends
in a dense layer over its 4 × 4 features. One departure from upstream: noise is drawn from an explicit
``torch.Generator`` (upstream: the global generator) or switched off (``noise_mode="none"``).
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import stylegan_ops as ops
from baselines.comod import NOISE_MODES
from misato.errors import MisatoError

RESAMPLE_KERNEL = (1, 3, 3, 1)
LATENT_SIZE = 512
MAPPING_LAYERS = 8
MAPPING_LR = 0.01


@dataclass(frozen=True)
class CoModConfig:
    """The port's generator options (``Generator.modify_commandline_options``); defaults = the released files.

    ``nf(stage) = clip(fmap_base / 2 ** stage, 1, fmap_max)`` channels at resolution ``2 ** (stage + 1)``.
    """

    resolution: int = 512
    fmap_base: int = 16 << 10
    fmap_max: int = 512
    dlatent_size: int = 512
    num_channels: int = 3
    dropout_rate: float = 0.5

    def nf(self, stage: int) -> int:
        return int(np.clip(int(self.fmap_base / (2.0 ** stage)), 1, self.fmap_max))

    @property
    def log2(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def mod_size(self) -> int:
        """Length of the co-modulation vector: the style w ⊕ the encoder's global code (``2 · nf(1)``)."""
        return self.dlatent_size + 2 * self.nf(1)


# --- rosinality StyleGAN2 layers (stylegan2.py, op/) -----------------------------------------------------------


class EqualLinear(nn.Module):
    """``x @ (w · lr / √in)ᵀ + b · lr``, then lrelu · √2 when ``activation``. ``x``: ``[N, in]``."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale)
        return ops.bias_act(x, self.bias * self.lr_mul, act="lrelu" if self.activation else "linear")


class EqualConv2d(nn.Module):
    """Equalised-learning-rate convolution (weight scaled by ``1 / √(in · k²)``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """``lrelu(x + b, 0.2) · √2`` with a per-channel bias."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.bias_act(x, self.bias, act="lrelu")


class Blur(nn.Module):
    """FIR filter ``[1, 3, 3, 1]`` (outer product, sum 1, times ``gain``) with padding ``pad`` on every side pair;
    the filter is the persistent buffer ``kernel``."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", ops.setup_filter(RESAMPLE_KERNEL, gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor, up: int = 1) -> torch.Tensor:
        p0, p1 = self.pad
        return ops.upfirdn2d(x, self.kernel, up=up, padding=[p0, p1, p0, p1])


class ConvLayer(nn.Sequential):
    """[``Blur``,] ``EqualConv2d`` [, ``FusedLeakyReLU``] as a ``Sequential`` (its indices are the key names);
    ``downsample`` blurs then convolves with stride 2."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = len(RESAMPLE_KERNEL) - 2 + kernel_size - 1
            layers.append(Blur(((p + 1) // 2, p // 2)))
            layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=2, bias=not activate))
        else:
            layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=kernel_size // 2,
                                      bias=not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) convolution, one weight per sample through a grouped convolution.
    ``upsample``: transposed convolution with stride 2, then the blur (``conv.blur.kernel``, gain 4)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            p = len(RESAMPLE_KERNEL) - 2 - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        weight = self.scale * self.weight * self.modulation(style).view(batch, 1, in_channel, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, self.out_channel, 1, 1, 1)
        k = self.kernel_size
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            x = self.blur(F.conv_transpose2d(x, weight, stride=2, groups=batch))
        else:
            x = F.conv2d(x, weight.reshape(batch * self.out_channel, in_channel, k, k), padding=self.padding,
                         groups=batch)
        return x.view(batch, self.out_channel, *x.shape[2:])


class NoiseInjection(nn.Module):
    """``x + weight · noise`` (noise ``[N, 1, H, W]``; None = no noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated 3 × 3 convolution + noise + ``FusedLeakyReLU``."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: str,
                generator: torch.Generator | None) -> torch.Tensor:
        x = self.conv(x, style)
        noise = None
        if noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, *x.shape[2:]], generator=generator, device=x.device, dtype=x.dtype)
        return self.activate(self.noise(x, noise))


class ToRGB(nn.Module):
    """1 × 1 modulated convolution (no demodulation) + bias ``[1, C, 1, 1]``, plus the previous RGB upsampled by 2
    (``upsample.kernel``, gain 4)."""

    def __init__(self, in_channel: int, style_dim: int, out_channel: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Blur((2, 1), gain=4)
        self.conv = ModulatedConv2d(in_channel, out_channel, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip, up=2)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


# --- Co-Mod-GAN (co_mod_gan.py) ---------------------------------------------------------------------------------


class G_mapping(nn.Module):  # noqa: N801 - the port's name is in every key
    """z ``[N, 512]`` → w ``[N, dlatent_size]``: pixel norm then 8 lrelu layers with learning-rate multiplier 0.01."""

    def __init__(self, config: CoModConfig) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [("Normalize", PixelNorm())]
        for idx in range(MAPPING_LAYERS):
            out = config.dlatent_size if idx == MAPPING_LAYERS - 1 else LATENT_SIZE
            layers.append((f"Dense{idx}", EqualLinear(LATENT_SIZE, out, lr_mul=MAPPING_LR, activation=True)))
        self.G_mapping = nn.Sequential(OrderedDict(layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G_mapping(z)


class E_fromrgb(nn.Module):  # noqa: N801
    def __init__(self, config: CoModConfig) -> None:
        super().__init__()
        self.FromRGB = ConvLayer(config.num_channels + 1, config.nf(config.log2 - 1), 1)


class E_block(nn.Module):  # noqa: N801
    def __init__(self, config: CoModConfig, res: int) -> None:
        super().__init__()
        self.Conv0 = ConvLayer(config.nf(res - 1), config.nf(res - 1), 3)
        self.Conv1_down = ConvLayer(config.nf(res - 1), config.nf(res - 2), 3, downsample=True)


class E_block_final(nn.Module):  # noqa: N801
    def __init__(self, config: CoModConfig) -> None:
        super().__init__()
        self.Conv = ConvLayer(config.nf(2), config.nf(1), 3)
        self.Dense0 = EqualLinear(config.nf(1) * 16, config.nf(1) * 2, activation=True)
        self.dropout = nn.Dropout(config.dropout_rate)


class Block0(nn.Module):
    """4 × 4: dense layer from the global code, one styled convolution, ToRGB."""

    def __init__(self, config: CoModConfig) -> None:
        super().__init__()
        c = config.nf(1)
        self.Dense = EqualLinear(2 * c, c * 16, activation=True)
        self.Conv = StyledConv(c, c, config.mod_size)
        self.ToRGB = ToRGB(c, config.mod_size, config.num_channels, upsample=False)


class Block(nn.Module):
    """``2 ** res``: upsampling styled convolution, + the encoder's skip feature, styled convolution, ToRGB."""

    def __init__(self, config: CoModConfig, res: int) -> None:
        super().__init__()
        self.Conv0_up = StyledConv(config.nf(res - 2), config.nf(res - 1), config.mod_size, upsample=True)
        self.Conv1 = StyledConv(config.nf(res - 1), config.nf(res - 1), config.mod_size)
        self.ToRGB = ToRGB(config.nf(res - 1), config.mod_size, config.num_channels)


class G_synthesis_co_mod_gan(nn.Module):  # noqa: N801
    """Encoder ``E`` (``{R}x{R}_0`` FromRGB, ``{r}x{r}`` blocks down to 8, ``4x4``) and decoder ``G_4x4`` …
    ``G_{R}x{R}``, skip architecture, co-modulated by ``w ⊕ global code``."""

    def __init__(self, config: CoModConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution_log2 = config.log2
        self.num_layers = 2 * config.log2 - 2
        encoder: list[tuple[str, nn.Module]] = [(f"{config.resolution}x{config.resolution}_0", E_fromrgb(config))]
        for res in range(config.log2, 2, -1):
            encoder.append((f"{2 ** res}x{2 ** res}", E_block(config, res)))
        encoder.append(("4x4", E_block_final(config)))
        self.E = nn.Sequential(OrderedDict(encoder))
        self.G_4x4 = Block0(config)
        for res in range(3, config.log2 + 1):
            setattr(self, f"G_{2 ** res}x{2 ** res}", Block(config, res))

    def encode(self, images_in: torch.Tensor, masks_in: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The global code ``[N, 2 · nf(1)]`` and the skip features by log2 resolution."""
        x = torch.cat([1 - masks_in - 0.5, images_in * (1 - masks_in)], 1)
        features: dict[int, torch.Tensor] = {}
        x = getattr(self.E, f"{self.config.resolution}x{self.config.resolution}_0").FromRGB(x)
        for res in range(self.config.log2, 2, -1):
            block = getattr(self.E, f"{2 ** res}x{2 ** res}")
            x = block.Conv0(x)
            features[res] = x
            x = block.Conv1_down(x)
        final = getattr(self.E, "4x4")
        x = final.Conv(x)
        features[2] = x
        return final.dropout(final.Dense0(x.flatten(1))), features

    def forward(self, images_in: torch.Tensor, masks_in: torch.Tensor, dlatents: torch.Tensor,
                noise_mode: str = "random", generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw output ``[N, C, R, R]`` (before compositing); ``dlatents`` ``[N, num_layers, dlatent_size]``."""
        x_global, features = self.encode(images_in, masks_in)

        def mod(idx: int) -> torch.Tensor:
            return torch.cat([dlatents[:, idx], x_global], 1)

        first = self.G_4x4
        x = first.Dense(x_global).view(-1, self.config.nf(1), 4, 4)
        x = first.Conv(x, mod(0), noise_mode, generator)
        y = first.ToRGB(x, mod(1))
        for res in range(3, self.config.log2 + 1):
            block = getattr(self, f"G_{2 ** res}x{2 ** res}")
            x = block.Conv0_up(x, mod(2 * res - 5), noise_mode, generator) + features[res]
            x = block.Conv1(x, mod(2 * res - 4), noise_mode, generator)
            y = block.ToRGB(x, mod(2 * res - 3), skip=y)
        return y


class Generator(nn.Module):
    """Mapping + synthesis, as the port's ``Generator`` (single latent, no style mixing at inference).

    ``forward(images, masks, z, truncation=1, truncation_latent=None, noise_mode, generator)`` → composited
    ``[N, C, R, R]``: the raw output in the hole (mask 1), the input elsewhere. Truncation as the port:
    ``w_avg + ψ · (w − w_avg)``.
    """

    def __init__(self, config: CoModConfig = CoModConfig()) -> None:
        super().__init__()
        self.config = config
        self.G_mapping = G_mapping(config)
        self.G_synthesis = G_synthesis_co_mod_gan(config)

    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """The truncation centre ``[1, dlatent_size]``: the mean w of ``n`` latents (the port's ``mean_latent(4096)``,
        here from a seeded generator; the converted files carry no ``dlatent_avg``)."""
        device = next(self.parameters()).device
        z = torch.randn([n, LATENT_SIZE], generator=torch.Generator().manual_seed(seed)).to(device)
        return self.G_mapping(z).mean(0, keepdim=True)

    def forward(self, images_in: torch.Tensor, masks_in: torch.Tensor, z: torch.Tensor, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        w = self.G_mapping(z)
        if truncation != 1:
            if truncation_latent is None:
                raise ValueError("truncation != 1 needs truncation_latent (see mean_latent)")
            w = truncation_latent + truncation * (w - truncation_latent)
        dlatents = w.unsqueeze(1).repeat(1, self.G_synthesis.num_layers, 1)
        raw = self.G_synthesis(images_in, masks_in, dlatents, noise_mode=noise_mode, generator=generator)
        return raw * masks_in + images_in * (1 - masks_in)


# --- reading the files -------------------------------------------------------------------------------------------

_FROM_RGB = re.compile(r"^G_synthesis\.E\.(\d+)x\1_0\.FromRGB\.0\.weight$")


def config_from_state_dict(state: dict[str, torch.Tensor], source: str) -> CoModConfig:
    """The :class:`CoModConfig` a port checkpoint was built with, read off its key names and shapes
    (resolution from the encoder's first layer, channel widths from its output, w size from the mapping).

    Raises:
        MisatoError: not a Co-Mod-GAN generator state dict (the message names what is missing).
    """
    found = [(int(m.group(1)), key) for key in state if (m := _FROM_RGB.match(key))]
    last_dense = f"G_mapping.G_mapping.Dense{MAPPING_LAYERS - 1}.weight"
    if len(found) != 1 or last_dense not in state or "G_synthesis.G_4x4.Dense.weight" not in state:
        sample = ", ".join(sorted(state)[:5])
        raise MisatoError(f"{source}: not a Co-Mod-GAN generator (*_net_G_ema.pth) state dict: no "
                          f"G_synthesis.E.<R>x<R>_0.FromRGB / G_mapping keys (first keys: {sample})")
    resolution, key = found[0]
    log2 = int(math.log2(resolution))
    first_channels = int(state[key].shape[0])  # nf(log2 - 1)
    fmap_max = int(state["G_synthesis.G_4x4.Dense.weight"].shape[1]) // 2  # 2 · nf(1), nf(1) = fmap_max
    return CoModConfig(resolution=resolution, fmap_base=first_channels << (log2 - 1), fmap_max=fmap_max,
                       dlatent_size=int(state[last_dense].shape[0]), num_channels=int(state[key].shape[1]) - 1)


def _is_tensorflow_pickle(path) -> bool:
    """True for a raw pickle naming NVIDIA's TF ``dnnlib`` (the official ``co-mod-gan-*.pkl``)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return head[:1] == b"\x80" and b"dnnlib" in head


def load_generator(path, device: str = "cpu") -> Generator:
    """Build the generator a port checkpoint describes and load it strictly (a report naming missing/unexpected
    keys and shape mismatches otherwise). The file is read with ``weights_only=True``; a ``module.`` prefix
    (a ``DataParallel`` save) is dropped, as the port's ``util.load_network`` does.

    Raises:
        MisatoError: unreadable file, the official TF1 pickle (not supported: see docs/baselines.md), another
            model's checkpoint.
    """
    from misato.checkpoint import load_strict, read_state_dict

    if os.path.isfile(path) and _is_tensorflow_pickle(path):
        raise MisatoError(f"{path}: this is an official TensorFlow 1 Co-Mod-GAN pickle (dnnlib/tflib networks), "
                          "which comod does not read; use the PyTorch port's converted *_net_G_ema.pth "
                          "(e.g. co-mod-gan-places2-050000_net_G_ema.pth, see `misato weights`)")
    state = {key.removeprefix("module."): value
             for key, value in read_state_dict(path, "the Co-Mod-GAN generator").items()}
    generator = Generator(config_from_state_dict(state, str(path)))
    load_strict(generator, state, str(path))
    return generator.to(device).eval().requires_grad_(False)
