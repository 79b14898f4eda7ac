"""Shared by the feature networks: input checks and BatchNorm folding (weight files are read and loaded by
:mod:`misato.checkpoint`)."""
from __future__ import annotations

import torch
from torch import nn


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold every Inception ``BasicConv2d``'s BatchNorm into its convolution, in place (inference only).

    ``bn(conv(x))`` with frozen statistics is itself a convolution; computing it as one skips a pass over every
    activation (~10% of Inception's CPU time). Features change only by float rounding (~1e-6 relative).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    from torchvision.models.inception import BasicConv2d

    for block in network.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, nn.BatchNorm2d):
            conv, bn = block.conv, block.bn  # torch's fuse_conv_bn_eval, without its deep copy of the convolution
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                          bn.eps, bn.weight, bn.bias)
            block.bn = nn.Identity()
    return network


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Raise ValueError unless ``images`` is float32 [N, 3, H, W] (values expected in [0, 1])."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.float32:
        raise ValueError(f"{what}: expected float32 [N, 3, H, W] in [0, 1], got {images.dtype} {tuple(images.shape)}")
