"""The TF "2015-12-05" FID Inception in pytorch-fid's layout (protocol ``comod``).

The network is torchvision's Inception-v3 with the FID graph's quirks: average pools in the Mixed blocks ignore
padding (``count_include_pad=False``), and the last block (``Mixed_7c``) max-pools its pool branch. State-dict
keys are those of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torch-fidelity's file has the same
weights); its 1008-way ``fc`` classifier is not used here and is ignored when present.

Input pipeline (as torch-fidelity and the TF graph), route :data:`PREPROCESS` of the protocol table: RGB on the
0–255 scale, TF1 bilinear resize to 299 (:func:`prepare_tf1`, on the CPU from the uint8 image), then on the
network's device ``(x - 128) / 128``. Outputs are the pool3 2048-d vector, or the earlier taps torch-fidelity exposes
(``"64"``, ``"192"``, ``"768"``: spatial means of the feature maps after the first two max pools and after
``Mixed_6e``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import inception as tv_inception

from evaluate.features.common import check_images, fold_batch_norms
from evaluate.features.tf_resize import resize_bilinear_tf1
from misato.checkpoint import load_strict, read_state_dict

PREPROCESS = "tf1-bilinear-299"
"""Name of this preprocessing route in the protocol table."""
INPUT_SIZE = 299
TAPS = ("64", "192", "768", "2048")
CLASSIFIER_PREFIX = "fc."  # the official file's 1008-way logits; no protocol uses them
CLASSIFIER_SHAPES = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}

BasicConv2d = tv_inception.BasicConv2d  # conv (no bias) + BatchNorm(eps=0.001) + ReLU


def prepare_tf1(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` RGB → float32 ``[3, 299, 299]`` on the 0–255 scale, TF1 bilinear resize (CPU)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    return resize_bilinear_tf1(pixels, (INPUT_SIZE, INPUT_SIZE))[0].contiguous()


def _avg_pool_3x3(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv_inception.InceptionA):
    """Mixed_5b/c/d: the pool branch averages without counting padding."""

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(tv_inception.InceptionC):
    """Mixed_6b–e: the pool branch averages without counting padding."""

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class FIDInceptionE(tv_inception.InceptionE):
    """Mixed_7b (average pool without padding counts) and Mixed_7c (``max_pool_branch=True``)."""

    def __init__(self, in_channels: int, max_pool_branch: bool) -> None:
        super().__init__(in_channels)
        self.max_pool_branch = max_pool_branch

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool_branch else _avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception up to pool3 (no classifier), with pytorch-fid's parameter names.

    ``forward(x)`` / ``features(x, tap)``: x float32 [N, 3, H, W] RGB in [0, 1], any H, W ->
    float32 [N, int(tap)] (default tap ``"2048"``, pool3). ``forward_prepared(x)``: x float32 [N, 3, 299, 299]
    on the 0–255 scale from :func:`prepare_tf1` -> float32 [N, 2048] (the evaluator's route).

    Attributes:
        weights: {registry name: sha256} of the loaded file (empty until :func:`load_fid_inception` fills it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = tv_inception.InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = tv_inception.InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool_branch=True)
        self.weights: dict[str, str] = {}

    preprocess_route = PREPROCESS

    def preprocess(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 3, 299, 299] in [-1, 1) as the TF graph sees it."""
        images = resize_bilinear_tf1(images * 255.0, (INPUT_SIZE, INPUT_SIZE))
        return (images - 128.0) / 128.0

    def features(self, images: Tensor, tap: str = "2048") -> Tensor:
        """Features at ``tap`` (one of :data:`TAPS`) for images in [0, 1]; float32 [N, int(tap)]."""
        if tap not in TAPS:
            raise ValueError(f"unknown tap {tap!r}; choose one of {TAPS}")
        check_images(images)
        return self._tapped(self.preprocess(images), tap)

    def forward_prepared(self, prepared: Tensor) -> Tensor:
        if prepared.dtype != torch.float32 or prepared.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected float32 [N, 3, 299, 299], got {prepared.dtype} {tuple(prepared.shape)}")
        x = prepared.to(self.Conv2d_1a_3x3.conv.weight.device).sub(128.0).div_(128.0)
        return self._tapped(x.contiguous(memory_format=torch.channels_last), "2048")

    def _tapped(self, x: Tensor, tap: str) -> Tensor:
        """Run the preprocessed input [N, 3, 299, 299] in [-1, 1) up to ``tap``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        if tap == "64":
            return _spatial_mean(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        if tap == "192":
            return _spatial_mean(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        if tap == "768":
            return _spatial_mean(x)
        for block in (self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return _spatial_mean(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images, "2048")


def _spatial_mean(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(path, source: str, weights: dict[str, str]) -> FIDInceptionV3:
    """Build the extractor (eval mode, no gradients) from a pytorch-fid-layout file or its ``.pypi.safetensors``."""
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        network = FIDInceptionV3()
    load_strict(network, read_state_dict(path, "the FID Inception-v3"), source, ignored_prefixes=(CLASSIFIER_PREFIX,))
    fold_batch_norms(network.eval())
    network.weights = dict(weights)
    network.requires_grad_(False)
    return network.eval()
