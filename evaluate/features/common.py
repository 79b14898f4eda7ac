"""Shared by the feature networks: input checks, reading weight files, strict key matching with clear errors."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from misato.errors import MisatoError
from misato.io import preview_names

# BatchNorm's step counter: absent from old official files, meaningless at inference.
_BN_COUNTER = "num_batches_tracked"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``) onto the CPU.

    Raises:
        MisatoError: the file cannot be read as a state dict of tensors.
    """
    path = Path(path)
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise MisatoError(f"{path}: cannot be read as a weights file ({type(error).__name__}: {error})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise MisatoError(f"{path}: is not a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    ignored_prefixes: tuple[str, ...] = (),
) -> None:
    """Load ``state_dict`` into ``module`` requiring every parameter/buffer and matching shapes.

    Keys starting with one of ``ignored_prefixes`` (parts of the official file the feature network does not
    use, e.g. a classifier) are dropped first; BatchNorm ``num_batches_tracked`` counters may be absent.

    Raises:
        MisatoError: naming ``source`` and listing missing keys, unexpected keys and shape mismatches.
    """
    state = {k: v for k, v in state_dict.items() if not k.startswith(ignored_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_BN_COUNTER)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {preview_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {preview_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {preview_names(mismatched)}")
    if problems:
        raise MisatoError(f"{source}: not the expected weights for this network; " + "; ".join(problems))
    for key, value in expected.items():
        if key.endswith(_BN_COUNTER) and key not in state:
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    # A module built on the meta device (no random initialisation) takes the loaded tensors as they are.
    on_meta = any(tensor.is_meta for tensor in expected.values())
    module.load_state_dict(state, strict=True, assign=on_meta)


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold every Inception ``BasicConv2d``'s BatchNorm into its convolution, in place (inference only).

    ``bn(conv(x))`` with frozen statistics is itself a convolution; computing it as one skips a pass over every
    activation (~10% of Inception's CPU time). Features change only by float rounding (~1e-6 relative).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.inception import BasicConv2d

    for block in network.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, nn.BatchNorm2d):
            block.conv = fuse_conv_bn_eval(block.conv.eval(), block.bn.eval())
            block.bn = nn.Identity()
    return network


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Raise ValueError unless ``images`` is float32 [N, 3, H, W] (values expected in [0, 1])."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.float32:
        raise ValueError(f"{what}: expected float32 [N, 3, H, W] in [0, 1], got {images.dtype} {tuple(images.shape)}")
