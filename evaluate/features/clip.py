"""CLIP score: OpenAI CLIP ViT-L/14 embeddings of the hole region of the prediction and of the ground truth.

The protocol of the official MISATO script (``asuka-flux/eval/cal_clip_score.py`` of Yikai-Wang/asuka-misato):
for each image, the prediction and the ground truth with every pixel outside the hole set to black
(``x · m`` with ``m = mask // 255``, 255 = hole), each preprocessed by CLIP's own transform on the PIL image
(bicubic resize of the short side to 224 — the long side to ``int(224 · long / short)`` — centre crop 224, to
``[0, 1]``, OpenAI mean/std), then ``encode_image`` and L2 normalisation; the per-pair score is the cosine of
the two embeddings, the metric its mean over images (higher is better; an image without hole pixels scores 1,
both inputs being black).

Where this module differs from the released script (it implements the script's evident intent):

- the script averages each normalised embedding over its feature axis (``torch.mean(feats, axis=1)``) before
  ``(pred @ gt.T).diagonal()``, which reduces every embedding to a scalar, and the ``.diagonal()`` of the
  resulting 0-d product raises; here the score is the per-pair cosine of the full embeddings;
- the script stacks a batch's predictions and ground truths and splits the features at row 128 whatever the
  batch's length, so its last, shorter batch (MISATO@512: 2000 = 15 · 128 + 80) would pair predictions with
  ground truths and with other images; here every prediction is paired with its own ground truth;
- the script runs on CUDA, where ``clip.load`` keeps the weights in float16; here the network runs in float32
  (the cosine in float64);
- the script masks the raw prediction, the evaluator passes the composite: inside the hole they are the same
  pixels, outside both are zeroed;
- the script's hole is ``mask == 255``; here it is the mask as binarised by the project (identical for the
  release's 0/255 masks).

Stages: :func:`masked_clip_inputs` (CPU, uint8 numpy in — cheap enough for DataLoader workers) →
:meth:`ClipScorer.score_inputs` (the network) → :func:`evaluate.functional.clip_score` (cosines).
:meth:`ClipScorer.score` runs all three on uint8 tensors. Embeddings change in their last bits with the batch
they are computed in (as for any network on CPU/GPU), so the same batches give bit-identical scores.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evaluate.functional.clip_score import clip_score
from misato.errors import MisatoError

CLIP_WEIGHTS = "clip-vit-l-14-openai"
"""Registry entry of the CLIP score's network (OpenAI's TorchScript archive ``ViT-L-14.pt``)."""
CLIP_MODEL = "ViT-L-14"
CLIP_INPUT_SIZE = 224
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation (open_clip's ``OPENAI_DATASET_MEAN``/``_STD``; the tests compare them), kept here
so that DataLoader workers preprocess without importing open_clip (seconds per spawned worker)."""


@contextlib.contextmanager
def _quiet_torchscript():
    """Silence torch's deprecation of TorchScript (OpenAI's released file is a TorchScript archive)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def clip_preprocess(image: np.ndarray, size: int = CLIP_INPUT_SIZE) -> torch.Tensor:
    """CLIP's eval transform on one image, as torchvision applies it to a PIL image.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        size: the network's input size (224 for ViT-L/14).
    Returns:
        float32 ``[3, size, size]``: PIL bicubic resize of the short side to ``size`` (long side
        ``int(size · long / short)``), centre crop (offsets ``round((side − size) / 2)``, Python rounding),
        ``/ 255``, then ``(x − mean) / std`` with OpenAI's CLIP mean/std; values about [−1.8, 2.2].
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    new_long = int(size * max(height, width) / min(height, width))
    new_width, new_height = (size, new_long) if width <= height else (new_long, size)
    # Pillow returns an unchanged copy when the size already matches, as torchvision skips the resize
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BICUBIC))
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    pixels = torch.from_numpy(np.array(resized[top : top + size, left : left + size]))  # a writable copy
    mean = torch.tensor(OPENAI_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(OPENAI_STD, dtype=torch.float32)[:, None, None]
    return (pixels.permute(2, 0, 1).float().div(255) - mean) / std


def masked_clip_inputs(
    image: np.ndarray, gt: np.ndarray, mask: np.ndarray, size: int = CLIP_INPUT_SIZE
) -> torch.Tensor:
    """The CLIP inputs of one pair: prediction and ground truth, black outside the hole, preprocessed.

    Args:
        image: ``uint8 [H, W, 3]`` the prediction or the composite (they agree inside the hole).
        gt: ``uint8 [H, W, 3]`` the ground truth.
        mask: ``bool [H, W]``, True (or non-zero) = hole.
        size: the network's input size (:attr:`ClipScorer.input_size`).
    Returns:
        float32 ``[2, 3, size, size]``: row 0 the prediction, row 1 the ground truth (see :func:`clip_preprocess`).
    """
    image, gt, hole = np.asarray(image), np.asarray(gt), np.asarray(mask, dtype=bool)
    if image.shape != gt.shape or hole.shape != gt.shape[:2]:
        raise ValueError(f"image {image.shape}, gt {gt.shape} and mask {hole.shape} must agree in H, W")
    keep = hole[:, :, None]
    return torch.stack([clip_preprocess(np.where(keep, x, 0).astype(np.uint8), size) for x in (image, gt)])


def _hwc(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` tensor → ``[H, W, 3]`` numpy array on the CPU."""
    return image.permute(1, 2, 0).cpu().numpy()


@dataclass
class ClipScorer:
    """OpenAI CLIP ViT-L/14 image encoder for the CLIP score.

    Attributes:
        encoder: the :class:`misato.build.features.ClipEncoder` (open_clip model in eval mode, float32).
        weights: ``{registry name: sha256 of the weight file}`` for the records.
        input_size: the network's input side (224).
    """

    encoder: object
    weights: dict[str, str]
    input_size: int

    @property
    def device(self) -> str:
        return self.encoder.device

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """``float32 [N, 3, S, S]`` preprocessed images → ``float32 [N, D]`` CLIP embeddings (not normalised)."""
        with torch.inference_mode():
            return self.encoder.model.encode_image(inputs.to(self.device, torch.float32)).float().cpu()

    def score_inputs(self, pred_inputs: torch.Tensor, gt_inputs: torch.Tensor) -> np.ndarray:
        """Per-pair CLIP scores from preprocessed inputs (row 0 and row 1 of :func:`masked_clip_inputs`).

        Args:
            pred_inputs, gt_inputs: float32 ``[N, 3, S, S]``; both go through the network in one batch of 2N.
        Returns:
            float64 ``[N]`` cosines in [−1, 1].
        """
        if pred_inputs.shape != gt_inputs.shape:
            raise ValueError(
                f"pred and gt inputs differ in shape: {tuple(pred_inputs.shape)}, {tuple(gt_inputs.shape)}"
            )
        embeddings = self.embed(torch.cat([pred_inputs, gt_inputs]))
        return clip_score(embeddings[: len(pred_inputs)], embeddings[len(pred_inputs) :])

    def score(
        self,
        composites: torch.Tensor | Sequence[torch.Tensor],
        gts: torch.Tensor | Sequence[torch.Tensor],
        masks: torch.Tensor | Sequence[torch.Tensor],
    ) -> np.ndarray:
        """Per-pair CLIP scores of uint8 images.

        Args:
            composites, gts: ``uint8 [N, 3, H, W]`` tensors or sequences of ``uint8 [3, H, W]`` (sizes may differ
                between pairs).
            masks: ``bool [N, H, W]`` or a sequence of ``bool [H, W]``; True (or non-zero) = hole.
        Returns:
            float64 ``[N]`` cosines in [−1, 1] (higher is better).
        """
        if not len(composites) == len(gts) == len(masks):
            raise ValueError(f"got {len(composites)} composites, {len(gts)} ground truths and {len(masks)} masks")
        pairs = torch.stack(
            [
                masked_clip_inputs(_hwc(c), _hwc(g), m.cpu().numpy(), self.input_size)
                for c, g, m in zip(composites, gts, masks)
            ]
        )
        return self.score_inputs(pairs[:, 0], pairs[:, 1])


def build_clip_scorer(
    weights_path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> ClipScorer:
    """Load OpenAI CLIP ViT-L/14 from ``weights_path`` (trusted) or the weights registry (``ViT-L-14.pt`` in
    ``weights_dir``, ``~/.cache/misato/weights`` or ``$TORCH_HOME/hub/checkpoints``, hash-checked).

    The file must be OpenAI's TorchScript archive: the architecture is read from its tensors and the network is
    built with QuickGELU, as OpenAI trained it.

    Raises:
        MisatoError: the file is missing (offline: names the file, the folders and the URL), fails its hash check,
        or is not a TorchScript archive.
    """
    from misato.build.features import load_clip, zipfile_is_torchscript
    from misato.weights import resolve

    found = resolve(CLIP_WEIGHTS, weights_path, weights_dir)
    if not zipfile_is_torchscript(Path(found.path)):
        raise MisatoError(
            f"{found.path}: not OpenAI's TorchScript CLIP archive; the CLIP score needs {found.entry.filename} "
            f"({found.entry.url})"
        )
    with _quiet_torchscript():
        encoder = load_clip(CLIP_MODEL, str(found.path), device)
    input_size = encoder.model.visual.image_size[0]
    return ClipScorer(encoder=encoder, weights={found.entry.name: found.sha256}, input_size=input_size)


# --- random stand-ins in the official format (tests and benchmarks) -------------------------------------------

VIT_L_14_VISION = {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14}
"""OpenAI ViT-L/14's image tower (head width 64: 16 heads)."""
SMALL_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
"""A one-layer text tower of OpenAI's layout (heads = width // 64, as OpenAI's loader infers): the CLIP score
never runs the text tower, so stand-ins keep it small."""


class _TensorHolder(torch.nn.Module):
    """A bare scriptable module: it only carries buffers, like the tensors of OpenAI's released archives."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_random_openai_clip(
    path: str | os.PathLike,
    vision_cfg: dict | None = None,
    text_cfg: dict | None = None,
    embed_dim: int = 768,
    seed: int = 0,
) -> torch.nn.Module:
    """Write a randomly initialised CLIP as OpenAI's released archives hold it, and return it.

    The archive is a TorchScript module whose buffers are the state dict in OpenAI's key layout, in float16,
    plus the scalars ``input_resolution``, ``context_length`` and ``vocab_size``; OpenAI's loader infers the
    architecture from the tensors. Defaults: ViT-L/14's image tower (:data:`VIT_L_14_VISION`, about 0.6 GB in
    float16) and :data:`SMALL_TEXT`. Written atomically; the same seed gives the same tensors.

    Returns:
        the open_clip CLIP model (QuickGELU, eval, float32) holding exactly the archive's float16-rounded weights.
    """
    import io

    from open_clip.model import CLIP

    from misato.io import atomic_write_bytes

    vision_cfg = dict(VIT_L_14_VISION if vision_cfg is None else vision_cfg)
    text_cfg = dict(SMALL_TEXT if text_cfg is None else text_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=True)
    model = model.half().float().eval()
    tensors = {key: value for key, value in model.state_dict().items() if key != "attn_mask"}
    tensors["input_resolution"] = torch.tensor(vision_cfg["image_size"])
    tensors["context_length"] = torch.tensor(text_cfg["context_length"])
    tensors["vocab_size"] = torch.tensor(text_cfg["vocab_size"])
    archive = _TensorHolder()
    for key, value in tensors.items():
        *parents, leaf = key.split(".")
        holder = archive
        for part in parents:
            if not hasattr(holder, part):
                holder.add_module(part, _TensorHolder())
            holder = getattr(holder, part)
        holder.register_buffer(leaf, value.half() if value.is_floating_point() else value.clone())
    buffer = io.BytesIO()
    with _quiet_torchscript():
        torch.jit.save(torch.jit.script(archive), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return model
