"""Randomly initialised real architectures saved in the official file format, for tests and benchmarks.

The files have the same keys, shapes and container (``torch.save`` of a state dict) as the official downloads,
so every loading path runs exactly as with real weights. Values are drawn from one seeded generator so that
activations stay O(1) through the deep stacks (He-normal convolutions; BatchNorm statistics and affine terms
perturbed around identity); the same seed gives the same tensors.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from misato.io import atomic_write_bytes


def _fid_inception_official() -> nn.Module:
    from evaluate.features.fid_inception import CLASSIFIER_SHAPES, FIDInceptionV3

    network = FIDInceptionV3()
    network.fc = nn.Linear(*reversed(CLASSIFIER_SHAPES["fc.weight"]))  # the official file's 1008-way classifier
    return network


def _torchvision_inception_official() -> nn.Module:
    from evaluate.features.inception import official_architecture

    return official_architecture()


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(weights=None)

    return build


def _lpips_linear(net: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import warnings

        import lpips

        from evaluate.features.lpips import linear_view

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        return linear_view(model)

    return build


# registry name -> builder of a module whose state dict has exactly the official file's keys
OFFICIAL_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "inception-v3-imagenet": _torchvision_inception_official,
    "fid-inception": _fid_inception_official,
    "alexnet": _torchvision("alexnet"),
    "vgg16": _torchvision("vgg16"),
    "lpips-alex-v0.1": _lpips_linear("alex"),
    "lpips-vgg-v0.1": _lpips_linear("vgg"),
}


def _he_normal(shape: torch.Size, generator: torch.Generator) -> Tensor:
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)


def random_official_state_dict(name: str, seed: int = 0) -> dict[str, Tensor]:
    """A state dict with the official keys of registry entry ``name``, filled from ``seed``."""
    if name not in OFFICIAL_ARCHITECTURES:
        raise ValueError(f"no random stand-in for {name!r}; available: {sorted(OFFICIAL_ARCHITECTURES)}")
    module = OFFICIAL_ARCHITECTURES[name]()
    generator = torch.Generator().manual_seed(seed)
    non_negative = name.startswith("lpips-")  # LPIPS linear weights are non-negative, so distances are too
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                weight = _he_normal(layer.weight.shape, generator)
                layer.weight.copy_(weight.abs() if non_negative else weight)
                if layer.bias is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.01)
            elif isinstance(layer, nn.BatchNorm2d):
                size = layer.num_features
                layer.weight.copy_(0.8 + 0.4 * torch.rand(size, generator=generator))
                layer.bias.copy_(0.1 * torch.randn(size, generator=generator))
                layer.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                layer.running_var.copy_(0.8 + 0.4 * torch.rand(size, generator=generator))
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def save_random_official_weights(name: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random ``name`` network in the official format (``torch.save`` of the state dict) to ``path``.

    Atomic; returns ``path``. Supported names: the keys of :data:`OFFICIAL_ARCHITECTURES` (``vgg16`` includes
    its ImageNet classifier like the official file: about 0.5 GB).
    """
    buffer = io.BytesIO()
    torch.save(random_official_state_dict(name, seed), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
