"""MAE-FAR (Cao, Dong & Fu, ECCV 2022): the MAE prior + the ACR/FAR generator, from the official Lightning checkpoint.

The checkpoint (``--weights FILE`` or the registry entry ``maefar-places2``) is the PyTorch Lightning file of
``PLTrainer`` (``ACR/trainer.py``): read by :func:`misato.checkpoint.read_lightning_checkpoint` (a restricted
unpickler: no pickled code runs), its ``mae.*`` and ``acr.*`` tensors load strictly
(:func:`misato.checkpoint.load_strict`) into :class:`MAEFARNet` (``acr_ema.*``, ``D.*`` and loss networks are
ignored, as upstream ``test_custom.py --load_pl`` ignores them).

Inference as ``test_custom.py`` (``ACR/base/dataset.py``, ``DynamicFARDataset`` in test mode):

- the image is resized to ``size × size`` (256 or 512) with LANCZOS; the mask with nearest neighbour, ``> 127``
  = hole (when shrinking, a square pixel is a hole if any pixel it covers is one, so no hole vanishes);
- the MAE branch (:meth:`asuka.models.mae.MAEPrior.features_and_scores`) always sees the image at 256 (area
  means of the ``uint8`` levels, rounded, as OpenCV's ``INTER_AREA``), ImageNet normalisation; it returns the 512-d decoder features ``[B, 512, 16, 16]`` and the decoder attention scores
  ``[B, 256, 256]``;
- the masked positional encoding (:func:`masked_position_encoding`) is computed from the mask at 32 × 32;
- the generator takes the masked image ⊕ mask, adds the upsampled MAE features at four scales, transfers the
  scores' attention twice around its 9 FFC blocks, and returns a sigmoid image; it is composited
  ``mask · pred + (1 − mask) · image``, ``clip(x · 255)`` truncated to ``uint8``, resized back to the input size
  with LANCZOS where needed, and the input's known pixels are pasted back (untouched bit for bit).

Architecture (``ACR/networks/generators.py``, ``ffc.py``, ``layers.py``, ``attention.py``, config ``g_args``:
``rel_pos_num 128, use_attn, use_mpe``; ``MAE/models_mae.py`` ``mae_vit_base_patch16`` with ``mask_decoder``):
MAE 111,982,592 parameters (ViT-B encoder, 8-block 512-d decoder, no fine-tuning extras), ACR 40,988,491
(generator 27,049,795, prior encoder 13,938,696); 152,971,083 in all, checked against a per-layer count in
``tests/baselines/test_maefar.py``. Deterministic: the seed is unused. Licence of the weights: CC BY-NC 4.0.
"""
from __future__ import annotations

import functools
import os
import types
from pathlib import Path
from typing import Any

import numpy as np

from baselines.base import MethodOption, checked_hole, register_method
from baselines.torchscript import DEVICE_OPTION, WEIGHTS_OPTION, TensorInpainter, explicit_or_located, weights_record
from misato.checkpoint import load_strict, read_lightning_checkpoint
from misato.errors import MisatoError

PREFIXES = ("mae.", "acr.")
SIZES = (256, 512)
MAE_SIZE = 256
WHAT = "MAE-FAR (its Lightning checkpoint, the one test_custom.py reads with --load_pl)"
POS_SIZE = 32
REL_POS_NUM = 128
WEIGHTS_ENTRY = "maefar-places2"
ARCHITECTURE: dict[str, Any] = {
    "mae": dict(image_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512,
                decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, prior_layers=8, partial_token_embedding=False),
    "width": 64,
    "blocks": 9,
}
"""The released network: ``mae_vit_base_patch16(mask_decoder=True)`` and the ACR generator (``width`` = channels
of its first layer, doubled by each of 3 downsamplings; ``blocks`` FFC ResNet blocks). Tests shrink it."""

# ACR/base/dataset.py: the 3x3 kernels (applied by cv2.filter2D, i.e. correlation) growing the known region
_GROW = np.ones((3, 3), np.float32)
_DIRECTIONS = tuple(np.array(k, np.float32) for k in (
    [[1, 1, 0], [1, 1, 0], [0, 0, 0]],  # known above / left
    [[0, 0, 0], [1, 1, 0], [1, 1, 0]],  # below / left
    [[0, 1, 1], [0, 1, 1], [0, 0, 0]],  # above / right
    [[0, 0, 0], [0, 1, 1], [0, 1, 1]],  # below / right
))


def masked_position_encoding(hole: np.ndarray, pos_size: int = POS_SIZE,
                             rel_pos_num: int = REL_POS_NUM) -> tuple[np.ndarray, np.ndarray]:
    """MAE-FAR's masked positional encoding of one mask (``load_masked_position_encoding``).

    The mask is shrunk to ``pos_size²`` (area, any hole → hole); the known region grows one 3×3 step at a time, each
    hole pixel getting the step that reached it and, per direction, whether a known pixel above-left, below-left,
    above-right or below-right reached it; then both are enlarged back (nearest) and zeroed on known pixels.

    Args:
        hole: bool ``[S, S]``, True = hole.
    Returns:
        ``rel_pos`` int64 ``[S, S]`` in ``[0, rel_pos_num)`` (``step / (pos_size / 2) · rel_pos_num``, truncated)
        and ``direct`` int64 ``[S, S, 4]`` in {0, 1}. A mask with no known pixel gives zeros (upstream loops forever).
    """
    import cv2

    size = hole.shape
    small = cv2.resize(hole.astype(np.uint8) * 255, (pos_size, pos_size), interpolation=cv2.INTER_AREA) > 0
    known = (~small).astype(np.float32)
    step_map = np.zeros((pos_size, pos_size), np.int32)
    direct = np.zeros((pos_size, pos_size, 4), np.int32)
    step = 0
    while (known < 1).any():
        grown = (cv2.filter2D(known, -1, _GROW) > 0).astype(np.float32)
        ring = (grown == 1) & (known == 0)
        if not ring.any():
            break
        step += 1
        step_map[ring] = step
        for channel, kernel in enumerate(_DIRECTIONS):
            direct[(cv2.filter2D(known, -1, kernel) > 0) & (known == 0), channel] = 1
        known = grown
    rel_pos = np.clip((step_map / (pos_size / 2) * rel_pos_num).astype(np.int32), 0, rel_pos_num - 1)
    if size != (pos_size, pos_size):
        rel_pos = cv2.resize(rel_pos, size[::-1], interpolation=cv2.INTER_NEAREST)
        direct = cv2.resize(direct, size[::-1], interpolation=cv2.INTER_NEAREST)
        rel_pos[~hole] = 0
        direct[~hole] = 0
    return rel_pos.astype(np.int64), direct.astype(np.int64)


# --- the network (torch imported lazily: registering the method stays cheap) ---------------------------------

def build_network(architecture: dict[str, Any] | None = None):
    """The MAE-FAR network (default :data:`ARCHITECTURE`); its state-dict keys equal the Lightning file's
    ``mae.*`` / ``acr.*`` keys. Returns :class:`MAEFARNet`: ``(image [N, 3, S, S] in [0, 1], mask [N, 1, S, S],
    > 0 = hole) -> composited image [N, 3, S, S]``, S = 256 or 512."""
    architecture = ARCHITECTURE if architecture is None else architecture
    return _modules().MAEFARNet(architecture["mae"], architecture["width"], architecture["blocks"])


@functools.cache
def _modules():  # noqa: C901  (one namespace of small classes)
    """The torch module classes, defined on first use."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from asuka.models.mae import MAEPrior
    from baselines.lama import _modules as lama_modules

    FFC_BN_ACT = lama_modules().FFC_BN_ACT  # noqa: N806  (upstream's class name)

    def attention_transfer(x, scores, alpha):
        """``GroupConvAttention``: ``x [B, C, H, W]`` (H = W = rate · grid, rate even), ``scores [B, L, L]``
        (queries × keys, L = grid²) → ``x + alpha · y``; ``y`` at each query patch is the score-weighted sum of every
        key's ``2·rate``-wide patch (replicate padding ``rate / 2``), overlap-added with stride ``rate``, ÷ 4."""
        height, width = x.shape[-2:]
        grid = round(scores.shape[-1] ** 0.5)
        rate = height // grid
        kernel, pad = 2 * rate, rate // 2
        patches = F.unfold(F.pad(x, (pad,) * 4, mode="replicate"), kernel, stride=rate)  # [B, C·k·k, L keys]
        mixed = patches @ scores.transpose(1, 2)  # [B, C·k·k, L queries]
        return x + F.fold(mixed, (height, width), kernel, padding=pad, stride=rate) / 4 * alpha

    class FFCResnetBlock(nn.Module):
        """Two 3×3 FFC_BN_ACT (75 % global channels) on a tensor split into (local, global), plus the input."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.ffc1 = FFC_BN_ACT(channels, channels, 3, 0.75, 0.75, padding=1)
            self.ffc2 = FFC_BN_ACT(channels, channels, 3, 0.75, 0.75, padding=1)
            self.split = (channels - int(channels * 0.75), int(channels * 0.75))

        def forward(self, x):
            return x + torch.cat(self.ffc2(self.ffc1(tuple(torch.split(x, self.split, dim=1)))), dim=1)

    class GateConv(nn.Module):
        """4×4 stride-2 transposed conv to twice the channels; one half gates the other by a sigmoid."""

        def __init__(self, in_channels: int, out_channels: int) -> None:
            super().__init__()
            self.gate_conv = nn.ConvTranspose2d(in_channels, out_channels * 2, kernel_size=4, stride=2, padding=1)

        def forward(self, x):
            x, gate = self.gate_conv(x).chunk(2, dim=1)
            return x * torch.sigmoid(gate)

    class DirectionEmbedding(nn.Module):
        """``MultiLabelEmbedding``: a multi-hot ``[..., 4]`` times ``weight [4, dim]``."""

        def __init__(self, dim: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, dim))

        def forward(self, labels):
            return labels.float() @ self.weight

    def sinusoid_table(count: int, dim: int):
        """``MaskedSinusoidalPositionalEmbedding``'s fixed table ``[count, dim]``: sines then cosines."""
        angles = np.arange(count)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
        return torch.from_numpy(np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], 1)).float()

    class GCEncoder(nn.Module):
        """Prior encoder: MAE features → 4 gated upsamplings (widths 8w, 4w, 2w, w), each scaled by a learned
        ``alpha``; plus the masked positional embedding (``rel_pos_emb · alpha5 + direct_emb · alpha6``)."""

        def __init__(self, prior_dim: int, width: int) -> None:
            super().__init__()
            widths = [prior_dim + 2, width * 8, width * 4, width * 2, width]
            for i in range(4):
                setattr(self, f"convt{i}", GateConv(widths[i], widths[i + 1]))
                setattr(self, f"bnt{i}", nn.BatchNorm2d(widths[i + 1]))
                setattr(self, f"alpha{i + 1}", nn.Parameter(torch.tensor(0.0)))
            self.alpha_att1 = nn.Parameter(torch.tensor(0.0))
            self.alpha_att2 = nn.Parameter(torch.tensor(0.0))
            self.rel_pos_emb = nn.Embedding(REL_POS_NUM, width)
            self.rel_pos_emb.weight.data.copy_(sinusoid_table(REL_POS_NUM, width))
            self.direct_emb = DirectionEmbedding(width)
            self.alpha5 = nn.Parameter(torch.tensor(1.0), requires_grad=False)
            self.alpha6 = nn.Parameter(torch.tensor(1.0), requires_grad=False)

        def forward(self, features, rel_pos, direct, size: int):
            """``features [B, D, g, g]``, ``rel_pos [B, S, S]``, ``direct [B, S, S, 4]`` → (prior features at S,
            S/2, S/4, S/8, positional embedding ``[B, w, S, S]``)."""
            n = size // 16
            x = F.interpolate(features, size=(n, n), mode="bilinear", align_corners=False)
            r = 1 / n  # make_coord: cell centres in [-1, 1], channel 0 = row, 1 = column
            centres = -1 + r + (2 * r) * torch.arange(n, device=x.device).float()
            coords = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=0).to(x.dtype)
            x = torch.cat([x, coords.expand(x.shape[0], 2, n, n)], dim=1)
            prior = []
            for i in range(4):
                x = F.relu(getattr(self, f"bnt{i}")(getattr(self, f"convt{i}")(x)))
                prior.append(x * getattr(self, f"alpha{i + 1}"))
            position = (self.rel_pos_emb(rel_pos) * self.alpha5 + self.direct_emb(direct) * self.alpha6)
            return prior[::-1], position.permute(0, 3, 1, 2)

    class FFCGenerator(nn.Module):
        """7×7 conv (+ positional embedding), 3 stride-2 convs (each input + a prior feature), attention transfer,
        FFC blocks, attention transfer, 3 transposed convs, 7×7 conv, sigmoid; BatchNorm + ReLU throughout."""

        def __init__(self, width: int, blocks: int) -> None:
            super().__init__()
            self.pad1 = nn.ReflectionPad2d(3)
            self.conv1 = nn.Conv2d(4, width, kernel_size=7)
            self.bn1 = nn.BatchNorm2d(width)
            for i in range(2, 5):
                setattr(self, f"conv{i}", nn.Conv2d(width * 2 ** (i - 2), width * 2 ** (i - 1), 3, stride=2,
                                                    padding=1))
                setattr(self, f"bn{i}", nn.BatchNorm2d(width * 2 ** (i - 1)))
            self.middle = nn.Sequential(*[FFCResnetBlock(width * 8) for _ in range(blocks)])
            for i in range(1, 4):
                setattr(self, f"convt{i}", nn.ConvTranspose2d(width * 2 ** (4 - i), width * 2 ** (3 - i), 3,
                                                              stride=2, padding=1, output_padding=1))
                setattr(self, f"bnt{i}", nn.BatchNorm2d(width * 2 ** (3 - i)))
            self.padt = nn.ReflectionPad2d(3)
            self.convt4 = nn.Conv2d(width, 3, kernel_size=7)

        def forward(self, x, prior, position, scores, alpha_att1, alpha_att2):
            x = F.relu(self.bn1(self.conv1(self.pad1(x)) + position))
            for i in range(2, 5):
                x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x + prior[i - 2])))
            x = attention_transfer(self.middle(attention_transfer(x, scores, alpha_att1) + prior[3]), scores,
                                   alpha_att2)
            for i in range(1, 4):
                x = F.relu(getattr(self, f"bnt{i}")(getattr(self, f"convt{i}")(x)))
            return torch.sigmoid(self.convt4(self.padt(x)))

    class ACRModel(nn.Module):
        def __init__(self, prior_dim: int, width: int, blocks: int) -> None:
            super().__init__()
            self.G = FFCGenerator(width, blocks)
            self.GCs = GCEncoder(prior_dim, width)

    class MAEFARNet(nn.Module):
        """``mae`` (:class:`~asuka.models.mae.MAEPrior`) + ``acr`` (generator ``G``, prior encoder ``GCs``)."""

        def __init__(self, mae: dict[str, Any], width: int, blocks: int) -> None:
            super().__init__()
            self.mae = MAEPrior(**mae)
            self.acr = ACRModel(mae["decoder_embed_dim"], width, blocks)

        def forward(self, image, mask):
            """``image [N, 3, S, S]`` in [0, 1], ``mask [N, 1, S, S]`` (> 0 = hole) → composited ``[N, 3, S, S]``."""
            size = image.shape[-1]
            if image.shape[-2] != size or size % 16:
                raise MisatoError(f"maefar: the network takes square images with a side multiple of 16, got "
                                  f"{tuple(image.shape[-2:])}")
            hole = (mask > 0).to(image.dtype)
            encodings = [masked_position_encoding(h) for h in hole[:, 0].bool().cpu().numpy()]
            rel_pos = torch.from_numpy(np.stack([e[0] for e in encodings])).to(image.device)
            direct = torch.from_numpy(np.stack([e[1] for e in encodings])).to(image.device)
            mae_image = image
            if size != MAE_SIZE:  # as upstream's cv2.resize(INTER_AREA) of the uint8 image: area means, rounded
                mae_image = F.interpolate(torch.round(image * 255), size=(MAE_SIZE, MAE_SIZE), mode="area")
                mae_image = torch.floor(mae_image + 0.5) / 255
            features, scores = self.mae.features_and_scores(mae_image, hole)
            prior, position = self.acr.GCs(features, rel_pos, direct, size)
            predicted = self.acr.G(torch.cat([image * (1 - hole), hole], dim=1), prior, position, scores,
                                   self.acr.GCs.alpha_att1, self.acr.GCs.alpha_att2)
            return hole * predicted + (1 - hole) * image

    return types.SimpleNamespace(MAEFARNet=MAEFARNet, attention_transfer=attention_transfer)


# --- checkpoint ---------------------------------------------------------------------------------------------

def lightning_state_dict(state: dict, source: str) -> tuple[dict, list[str]]:
    """The ``mae.*`` and ``acr.*`` tensors of a Lightning state dict, and the other top-level prefixes (ignored)."""
    selected = {key: value for key, value in state.items() if key.startswith(PREFIXES)}
    ignored = sorted({key.split(".")[0] for key in state if not key.startswith(PREFIXES)})
    if not selected:
        raise MisatoError(f"{source}: no 'mae.*' or 'acr.*' keys (its keys start with {', '.join(ignored[:6])}); "
                          "not a MAE-FAR checkpoint")
    return selected, ignored


def load_maefar(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The network from the official Lightning file (strict ``mae.*``/``acr.*`` load) and what to record."""
    path = Path(path).expanduser()
    checkpoint = read_lightning_checkpoint(path, WHAT, wrappers=("state_dict",))
    state, ignored = lightning_state_dict(checkpoint.state_dict, str(path))
    net = build_network()
    load_strict(net, state, str(path))
    return net, {"weights_format": "lightning", "ignored_prefixes": ignored,
                 "refused_pickled_classes": checkpoint.refused}


def locate_weights() -> tuple[Path, str] | None:
    """``(path, origin)`` of the registry's MAE-FAR checkpoint in the searched folders, or None (never
    downloaded: the README's Google Drive link serves a confirmation page, not the file)."""
    from misato.weights import find_local, get_entry

    local = find_local(get_entry(WEIGHTS_ENTRY))
    return (local.path, local.origin) if local is not None else None


# --- the adapter ------------------------------------------------------------------------------------------

class MAEFARMethod(TensorInpainter):
    """MAE-FAR at ``size × size``: resize (LANCZOS image, nearest mask), the shared tensor path of
    :class:`~baselines.torchscript.TensorInpainter` (composite, quantise, paste-back), resize back, paste-back."""

    def __init__(self, net, size: int = 512, device: str = "cpu", record: dict[str, Any] | None = None) -> None:
        if size not in SIZES:
            raise MisatoError(f"--size must be one of {', '.join(map(str, SIZES))} (MAE-FAR's test sizes), got {size}")
        super().__init__(net, "maefar", input_range="0,1", mask_polarity="hole", pad_multiple=1, device=device,
                         record=record)
        self.size = size

    def _to_square(self, image: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2
        from PIL import Image

        if hole.shape == (self.size, self.size):
            return image, hole
        square = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.LANCZOS))
        shrinking = max(hole.shape) > self.size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_NEAREST
        square_hole = cv2.resize(hole.astype(np.float32), (self.size, self.size), interpolation=interpolation)
        return square, square_hole > (0 if shrinking else 0.5)

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        from PIL import Image

        holes = [checked_hole(self.name, image, mask) for image, mask in zip(images, masks)]
        squares = [self._to_square(image, hole) for image, hole in zip(images, holes)]
        filled = super().inpaint([s[0] for s in squares], [s[1] for s in squares], seeds)
        results = []
        for image, hole, result in zip(images, holes, filled):
            if result.shape != image.shape:
                result = np.asarray(Image.fromarray(result).resize(image.shape[1::-1], Image.LANCZOS))
            results.append(np.where(hole[..., None], result, image))
        return results

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "size": self.size,
            "resize": f"image LANCZOS, mask nearest (> 127 = hole; area, any hole, when shrinking) to {self.size}²; "
            "result LANCZOS back to the input size",
            "mae_input": f"{MAE_SIZE}² (area from {self.size}², rounded to uint8 levels), ImageNet mean/std",
            "padding": "none",
        }


def maefar_method(weights: str | None = None, size: int = 512, device: str = "cpu") -> MAEFARMethod:
    """The ``maefar`` method: ``--weights FILE`` (the Lightning checkpoint, trusted) or the registry's file."""
    from misato.weights import get_entry

    if size not in SIZES:  # before reading ~600 MB
        raise MisatoError(f"--size must be one of {', '.join(map(str, SIZES))} (MAE-FAR's test sizes), got {size}")
    entry = get_entry(WEIGHTS_ENTRY)
    found = explicit_or_located(
        weights, locate_weights,
        lambda folders: f"maefar: no weights found (looked for {entry.filename} in {folders}); download the "
        f"Lightning checkpoint from {entry.url} (CC BY-NC 4.0), save it as {entry.filename} in one of those folders, "
        "or pass --weights FILE")
    net, record = load_maefar(found[0])
    return MAEFARMethod(net, size, device, record={**weights_record(*found), **record})


register_method(
    "maefar",
    maefar_method,
    options=(WEIGHTS_OPTION,
             MethodOption("size", int, "side the image is resized to (MAE-FAR tests at 256 or 512)", SIZES, 512),
             DEVICE_OPTION),
    weights=(WEIGHTS_ENTRY,),
    locate=locate_weights,
    description="MAE-FAR (MAE prior + FFC ACR generator, Places2), official Lightning checkpoint; CC BY-NC 4.0",
    gpu_advised=True,
)
