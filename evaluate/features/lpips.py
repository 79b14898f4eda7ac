"""LPIPS v0.1 (AlexNet or VGG16 trunk) built from registry files, never from a download.

The ``lpips`` package's own :class:`lpips.LPIPS` holds the network; this module only fills it: the trunk from
the official torchvision file (``features.*`` keys; the classifier is ignored) or its ``.pypi.safetensors``
rebuild, and the linear layers from the v0.1 file shipped in the ``lpips`` wheel. Both loads are strict.
``forward`` is the package's own computation (differentiable); :meth:`LPIPSDistance.distance_uint8`, the
evaluator's route, computes the same distances (to float32 rounding, < 1e-6) with one trunk forward for both
sides and a head that works in place.
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
NORM_EPS = 1e-10
"""Added to each feature vector's L2 norm before dividing by it (``lpips.normalize_tensor``)."""


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
        # the package's input route 2·x − 1 then ScalingLayer (x − shift)/scale, as one affine map of 8-bit values
        shift, scale = model.scaling_layer.shift.double(), model.scaling_layer.scale.double()
        self.register_buffer("input_gain", (2 / (255 * scale)).float(), persistent=False)
        self.register_buffer("input_offset", ((-1 - shift) / scale).float(), persistent=False)
        self.weights = {backbone.entry.name: backbone.sha256, linear.entry.name: linear.sha256}
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_images(x, "x")
        check_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.model(x, y, normalize=True).flatten().float()

    def distance_uint8(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y uint8 [N, 3, H, W] (any memory format, on the network's device) -> float32 [N] LPIPS v0.1 distances.

        The same numbers as ``forward(x / 255, y / 255)`` to float32 rounding (< 1e-6), for inference only (no
        gradients): both sides go through the trunk as one batch [x; y], and per layer the head normalises the
        features over channels, squares the difference, averages it over the feature map and weighs the channels
        with the linear layer (the package's 1×1 convolution then spatial mean, summed in the other order).
        Each image's value is computed alone after the trunk, so it depends on its companions only as much as the
        trunk's convolutions do (not at all on the CPU from 256 px, see ``InpaintingMetrics._lpips``).
        """
        if x.dtype != torch.uint8 or y.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"expected two uint8 [N, 3, H, W] batches of one shape, got {x.dtype} {tuple(x.shape)} "
                             f"and {y.dtype} {tuple(y.shape)}")
        with torch.inference_mode():
            both = torch.cat([x, y]).contiguous().float().mul_(self.input_gain).add_(self.input_offset)
            features = self.model.net(both.contiguous(memory_format=torch.channels_last))
            n = len(x)
            distances = torch.zeros(n, dtype=torch.float32, device=x.device)
            for layer, lin in zip(features, self.model.lins):
                weight = lin.model[-1].weight.flatten()
                for i in range(n):
                    distances[i] += self._layer_distance(layer[i], layer[n + i], weight)
            return distances

    @staticmethod
    def _layer_distance(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
        """One layer's term for one pair: a, b the two sides' features [C, h, w] (overwritten), weight [C]."""
        a = a.div_(torch.linalg.vector_norm(a, dim=0, keepdim=True).add_(NORM_EPS))
        b = b.div_(torch.linalg.vector_norm(b, dim=0, keepdim=True).add_(NORM_EPS))
        difference = a.sub_(b).square_()
        return (difference.mean(dim=(1, 2)) * weight).sum()


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
