"""LaMa (Suvorov et al., WACV 2022): the big-lama FFC-ResNet generator, loaded from the official files.

Two files are accepted (``--weights FILE`` or the weights registry):

- ``big-lama/models/best.ckpt``, the official PyTorch Lightning checkpoint (from ``big-lama.zip``): read by a
  restricted unpickler (:func:`misato.checkpoint.read_lightning_checkpoint`) that admits tensors, containers and
  numpy scalars and replaces every other pickled object by an inert placeholder without running it (the names are
  recorded in ``run.json``); the generator's ``generator.model.*`` tensors load strictly
  (:func:`misato.checkpoint.load_strict`) into :class:`FFCResNetGenerator`.
- ``big-lama.pt``, the TorchScript export (``bin/to_jit.py``) that IOPaint distributes, called as
  ``(image [0,1], mask {0,1}) -> image``: loaded with ``torch.jit.load``.

Both go through :class:`baselines.torchscript.TensorInpainter` exactly as upstream ``bin/predict.py`` runs:
input = masked image ⊕ mask (``mask > 0`` = hole), symmetric padding to a multiple of 8, output composited
``mask · pred + (1 − mask) · image``, cropped, truncated to ``uint8``; known pixels pasted back.

Architecture (``configs/training/big-lama.yaml``, ``saicinpainting/training/modules/ffc.py``): ``ngf=64``, 3
stride-2 downsamplings, 18 FFC ResNet blocks at 512 channels with 75 % global (spectral) channels, LFU off,
3 transposed-conv upsamplings, reflect padding, BatchNorm + ReLU, sigmoid output: 50,975,875 parameters.
"""
from __future__ import annotations

import os
import types
import zipfile
from pathlib import Path
from typing import Any

from baselines.base import DEVICE_OPTION, WEIGHTS_OPTION, register_method
from baselines.torchscript import TensorInpainter, explicit_or_located, load_torchscript, weights_record
from misato.checkpoint import load_strict, read_lightning_checkpoint
from misato.errors import MisatoError

LIGHTNING_PREFIX = "generator."
WHAT = "big-lama (the Lightning models/best.ckpt or the TorchScript big-lama.pt)"


# --- the network (torch imported lazily: registering the method stays cheap) ---------------------------------

def build_generator(ngf: int = 64, n_downsampling: int = 3, n_blocks: int = 18, ratio_global: float = 0.75,
                    max_features: int = 1024):
    """The big-lama generator (defaults = ``big-lama.yaml``); its ``model`` keys equal upstream's.

    Returns:
        :class:`FFCResNetGenerator`: ``[N, 4, H, W]`` (masked RGB in [0, 1] ⊕ mask) → ``[N, 3, H, W]`` in [0, 1];
        H and W multiples of ``2 ** n_downsampling``.
    """
    return _modules().FFCResNetGenerator(ngf, n_downsampling, n_blocks, ratio_global, max_features)


def _modules():
    """The torch module classes, defined on first use (``FFC_BN_ACT`` is shared with :mod:`baselines.maefar`)."""
    global _MODULES
    if _MODULES is None:
        _MODULES = _define_modules()
    return _MODULES


_MODULES = None


def _define_modules():  # noqa: C901  (one namespace of small classes)
    import torch
    from torch import nn

    class FourierUnit(nn.Module):
        """Real FFT over H, W → 1×1 conv + BN + ReLU on (real, imag) stacked as channels → inverse FFT."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv_layer = nn.Conv2d(channels * 2, channels * 2, kernel_size=1, bias=False)
            self.bn = nn.BatchNorm2d(channels * 2)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            batch, channels, height, width = x.shape
            spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
            # channel order c0.re, c0.im, c1.re, ... as upstream's stack(-1).permute(0, 1, 4, 2, 3)
            stacked = torch.stack((spectrum.real, spectrum.imag), dim=2).reshape(batch, channels * 2, height, -1)
            stacked = self.relu(self.bn(self.conv_layer(stacked)))
            stacked = stacked.reshape(batch, channels, 2, height, -1)
            spectrum = torch.complex(stacked[:, :, 0], stacked[:, :, 1])
            return torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")

    class SpectralTransform(nn.Module):
        """The global→global path: 1×1 reduce to half, Fourier unit with a residual, 1×1 expand (LFU off)."""

        def __init__(self, in_channels: int, out_channels: int) -> None:
            super().__init__()
            half = out_channels // 2
            self.conv1 = nn.Sequential(nn.Conv2d(in_channels, half, kernel_size=1, bias=False),
                                       nn.BatchNorm2d(half), nn.ReLU(inplace=True))
            self.fu = FourierUnit(half)
            self.conv2 = nn.Conv2d(half, out_channels, kernel_size=1, bias=False)

        def forward(self, x):
            x = self.conv1(x)
            return self.conv2(x + self.fu(x))

    class FFC_BN_ACT(nn.Module):  # noqa: N801  (upstream's name, kept for the key names' sake)
        """Fast Fourier convolution on a (local, global) pair, then BN + activation on each part.

        ``ratio_gin``/``ratio_gout`` are the global fractions of the input/output channels; an absent part is the
        integer 0, as upstream, and its convolutions are identities that hold no keys.
        """

        def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                     ratio_gout: float, stride: int = 1, padding: int = 0, activation: bool = True) -> None:
            super().__init__()
            in_g = int(in_channels * ratio_gin)
            in_l = in_channels - in_g
            out_g = int(out_channels * ratio_gout)
            out_l = out_channels - out_g

            def conv(cin: int, cout: int) -> nn.Module:
                if cin == 0 or cout == 0:
                    return nn.Identity()
                return nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, padding_mode="reflect")

            self.ffc = nn.Module()
            self.ffc.convl2l = conv(in_l, out_l)
            self.ffc.convl2g = conv(in_l, out_g)
            self.ffc.convg2l = conv(in_g, out_l)
            self.ffc.convg2g = SpectralTransform(in_g, out_g) if in_g and out_g else nn.Identity()
            self.has_local, self.has_global = out_l > 0, out_g > 0
            self.bn_l = nn.BatchNorm2d(out_l) if out_l else nn.Identity()
            self.bn_g = nn.BatchNorm2d(out_g) if out_g else nn.Identity()
            self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

        def forward(self, x):
            x_l, x_g = x if isinstance(x, tuple) else (x, 0)
            out_l = out_g = 0
            if self.has_local:
                out_l = self.ffc.convl2l(x_l) + (self.ffc.convg2l(x_g) if torch.is_tensor(x_g) else 0)
                out_l = self.act(self.bn_l(out_l))
            if self.has_global:
                out_g = self.ffc.convl2g(x_l) + (self.ffc.convg2g(x_g) if torch.is_tensor(x_g) else 0)
                out_g = self.act(self.bn_g(out_g))
            return out_l, out_g

    class FFCResnetBlock(nn.Module):
        """Two 3×3 FFC_BN_ACT layers with identity shortcuts on both parts."""

        def __init__(self, channels: int, ratio: float) -> None:
            super().__init__()
            self.conv1 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1)
            self.conv2 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1)

        def forward(self, x):
            x_l, x_g = x
            y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
            return x_l + y_l, x_g + y_g

    class ConcatTupleLayer(nn.Module):
        def forward(self, x):
            x_l, x_g = x
            return torch.cat(x, dim=1) if torch.is_tensor(x_g) else x_l

    class FFCResNetGenerator(nn.Module):
        """``model`` = reflect-pad 3, 7×7 FFC, downsamplings, FFC blocks, concat, upsamplings, 7×7 conv, sigmoid."""

        def __init__(self, ngf: int, n_downsampling: int, n_blocks: int, ratio_global: float,
                     max_features: int) -> None:
            super().__init__()
            width = [min(max_features, ngf * 2 ** i) for i in range(n_downsampling + 1)]
            layers: list[nn.Module] = [nn.ReflectionPad2d(3), FFC_BN_ACT(4, ngf, 7, 0, 0)]
            for i in range(n_downsampling):
                ratio_out = ratio_global if i == n_downsampling - 1 else 0
                layers.append(FFC_BN_ACT(width[i], width[i + 1], 3, 0, ratio_out, stride=2, padding=1))
            layers += [FFCResnetBlock(width[-1], ratio_global) for _ in range(n_blocks)]
            layers.append(ConcatTupleLayer())
            for i in reversed(range(n_downsampling)):
                layers += [nn.ConvTranspose2d(width[i + 1], width[i], 3, stride=2, padding=1, output_padding=1),
                           nn.BatchNorm2d(width[i]), nn.ReLU(inplace=True)]
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, kernel_size=7), nn.Sigmoid()]
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x)

    class LamaInpainter(nn.Module):
        """``(image [N,3,H,W] in [0,1], mask [N,1,H,W], >0 = hole) -> image``, as upstream's JIT wrapper."""

        def __init__(self, generator: nn.Module) -> None:
            super().__init__()
            self.generator = generator

        def forward(self, image, mask):
            mask = (mask > 0).to(image.dtype)
            predicted = self.generator(torch.cat([image * (1 - mask), mask], dim=1))
            return mask * predicted + (1 - mask) * image

    return types.SimpleNamespace(FFC_BN_ACT=FFC_BN_ACT, FFCResNetGenerator=FFCResNetGenerator,
                                 LamaInpainter=LamaInpainter)


# --- the Lightning checkpoint's generator -------------------------------------------------------------------

def generator_state_dict(state: dict, source: str) -> dict:
    """The ``generator.*`` tensors of a Lightning state dict without the prefix."""
    generator = {key[len(LIGHTNING_PREFIX):]: value for key, value in state.items()
                 if key.startswith(LIGHTNING_PREFIX)}
    if not generator:
        prefixes = sorted({key.split(".")[0] for key in state})
        raise MisatoError(f"{source}: no '{LIGHTNING_PREFIX}*' keys (its keys start with {', '.join(prefixes[:6])}); "
                          "not a LaMa checkpoint")
    return generator


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``), False otherwise."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def load_lama(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The network ``(image, mask) -> image`` from either official file, and what to record about it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MisatoError(f"--weights {path}: no such file")
    if is_torchscript(path):
        return load_torchscript(path, device), {"weights_format": "torchscript"}
    checkpoint = read_lightning_checkpoint(path, WHAT, wrappers=("state_dict",))
    generator = build_generator()
    load_strict(generator, generator_state_dict(checkpoint.state_dict, str(path)), str(path))
    return _modules().LamaInpainter(generator), {"weights_format": "lightning",
                                                 "refused_pickled_classes": checkpoint.refused}


CHECKPOINT = Path("big-lama") / "models" / "best.ckpt"
"""Where the official checkpoint lands when ``big-lama.zip`` is unpacked into a searched weights folder."""
CHECKPOINT_URL = "https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip"
TORCHSCRIPT_ENTRY = "big-lama-torchscript"


def locate_weights() -> tuple[Path, str] | None:
    """``(path, origin)`` of the big-lama weights found without ``--weights``, or None.

    Looks for ``big-lama/models/best.ckpt`` in every folder of :func:`misato.weights.search_dirs` (the registry
    cannot hold it: it is published inside a zip, without hash), then for the registry's ``big-lama.pt``.
    """
    from misato.weights import find_local, get_entry, search_dirs

    for folder in search_dirs():
        if (folder / CHECKPOINT).is_file():
            return folder / CHECKPOINT, "found"
    local = find_local(get_entry(TORCHSCRIPT_ENTRY))
    return (local.path, local.origin) if local is not None else None


def lama_method(weights: str | None = None, device: str = "cpu") -> TensorInpainter:
    """The ``lama`` method: ``--weights FILE`` (either official file, trusted) or :func:`locate_weights`."""
    found = explicit_or_located(
        weights, locate_weights,
        lambda folders: f"lama: no weights found (looked for {CHECKPOINT} and big-lama.pt in {folders}); unzip "
        f"{CHECKPOINT_URL} into one of those folders, or put IOPaint's big-lama.pt there "
        "(`misato weights fetch big-lama-torchscript`), or pass --weights FILE")
    net, record = load_lama(found[0], device)
    return TensorInpainter(net, "lama", input_range="0,1", mask_polarity="hole", pad_multiple=8, device=device,
                           record={**weights_record(*found), **record})


register_method(
    "lama",
    lama_method,
    options=(WEIGHTS_OPTION, DEVICE_OPTION),
    weights=(TORCHSCRIPT_ENTRY,),
    locate=locate_weights,
    description="LaMa big-lama (FFC ResNet, Places2), official Lightning best.ckpt or TorchScript big-lama.pt",
)
