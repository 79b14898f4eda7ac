"""LPIPS v0.1 (AlexNet or VGG16 trunk) built from registry files, never from a download.

The ``lpips`` package's own :class:`lpips.LPIPS` does the computation; this module only fills it: the trunk from
the official torchvision file (``features.*`` keys; the classifier is ignored) or its ``.pypi.safetensors``
rebuild, and the linear layers from the v0.1 file shipped in the ``lpips`` wheel. Both loads are strict.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

from evaluate.features.common import check_images
from evaluate.protocols import LPIPS_WEIGHTS as LPIPS_NETS
from misato.checkpoint import load_strict, read_state_dict
from misato.weights import ResolvedWeights
BACKBONE_IGNORED = ("classifier.",)  # torchvision's ImageNet classifier; LPIPS uses the conv trunk only


def trunk_view(model: nn.Module) -> nn.Module:
    """A module whose state-dict keys are torchvision's ``features.<i>.*`` and whose tensors are the LPIPS slices'."""
    features = nn.Module()
    for lpips_slice in model.net.children():
        for index, layer in lpips_slice.named_children():
            features.add_module(index, layer)
    view = nn.Module()
    view.features = features
    return view


def linear_view(model: nn.Module) -> nn.Module:
    """A module with the keys of the lpips wheel's files (``lin<k>.model.1.weight``) sharing LPIPS' tensors."""
    view = nn.Module()
    for index, layer in enumerate(model.lins):
        view.add_module(f"lin{index}", layer)
    return view


class LPIPSDistance(nn.Module):
    """``forward(x, y)``: x, y float32 [N, 3, H, W] in [0, 1] -> float32 [N] LPIPS v0.1 distances.

    Scaling to [-1, 1] happens inside. Attributes: ``net`` (``"alex"``/``"vgg"``), ``model`` (the
    :class:`lpips.LPIPS` instance), ``weights`` ({registry name: sha256} of the backbone and linear files).
    """

    def __init__(self, net: str, backbone: ResolvedWeights, linear: ResolvedWeights) -> None:
        super().__init__()
        import lpips

        from lpips.lpips import ScalingLayer

        # Built without random initialisation (the meta device; ~60 M trunk and classifier values are never
        # drawn): every parameter comes from the two files, loaded strictly below; the input scaling constants
        # are the package's own, made again on the CPU.
        with warnings.catch_warnings(), torch.device("meta"):  # lpips passes torchvision's deprecated `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
        model.to_empty(device="cpu")
        model.scaling_layer = ScalingLayer()
        load_strict(trunk_view(model), read_state_dict(backbone.path, f"the LPIPS {net} backbone"), str(backbone.path),
                    BACKBONE_IGNORED)
        load_strict(linear_view(model), read_state_dict(linear.path, f"the LPIPS {net} linear layers"), str(linear.path))
        self.net = net
        self.model = model
        self.weights = {backbone.entry.name: backbone.sha256, linear.entry.name: linear.sha256}
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_images(x, "x")
        check_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.model(x, y, normalize=True).flatten().float()


def build_lpips(
    net: str = "alex",
    backbone_path: str | os.PathLike | None = None,
    lin_path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LPIPSDistance:
    """LPIPS v0.1 with ``net`` in ``{"alex", "vgg"}`` (channels-last); files from explicit paths or the registry.

    Raises:
        MisatoError: a file is missing (offline), fails its hash check, or has the wrong keys/shapes.
    """
    from misato.weights import resolve

    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(LPIPS_NETS)}")
    backbone_name, linear_name = LPIPS_NETS[net]
    backbone = resolve(backbone_name, backbone_path, weights_dir)
    linear = resolve(linear_name, lin_path, weights_dir)
    return LPIPSDistance(net, backbone, linear).to(device=device, memory_format=torch.channels_last)
