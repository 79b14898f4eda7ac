"""Plain SD inpainting for paper Table 1's SD rows, through the same pipeline as ASUKA.

The three baselines differ only in the condition handed to :class:`~asuka.pipeline.ASUKAInpaintPipeline` as
``prompt_embeds``: the CLIP text encoding of the empty prompt (``sd``), of ``"background"`` (``sd-text``), or learned
prompt embeddings read from a file (``sd-prompt``). Everything else — latents, noise, scheduler, decoding — is
the ASUKA code path with the KL-VAE decoder.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from misato.errors import MisatoError

SD_PROMPTS = {"sd": "", "sd-text": "background"}
PROMPT_EMBEDS_KEY = "prompt_embeds"


def encode_prompt(model_dir: str | os.PathLike, prompt: str) -> torch.Tensor:
    """``[1, 77, cross_attention_dim]`` last hidden states of the folder's CLIP text encoder for ``prompt``
    (padded to the tokenizer's max length, as diffusers' SD pipelines do)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    model_dir = Path(model_dir)
    for part in ("tokenizer", "text_encoder"):
        if not (model_dir / part).is_dir():
            raise MisatoError(f"{model_dir} has no {part}/ folder; the text-prompt SD baselines need the SD "
                              "inpainting folder's tokenizer and text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(model_dir / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).eval()
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


def load_prompt_embeds(path: str | os.PathLike) -> torch.Tensor:
    """Learned prompt embeddings ``[1, L, cross_attention_dim]`` from a ``.safetensors``/``.pt`` file holding a
    ``[L, D]`` or ``[1, L, D]`` tensor under the key ``prompt_embeds`` (or as the file's only tensor)."""
    from misato.checkpoint import read_state_dict

    state = read_state_dict(path, "learned prompt embeddings", wrappers=())
    tensor = state.get(PROMPT_EMBEDS_KEY)
    if tensor is None and len(state) == 1:
        tensor = next(iter(state.values()))
    if tensor is None:
        raise MisatoError(f"{path}: no tensor named {PROMPT_EMBEDS_KEY!r} (found {', '.join(sorted(state))})")
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] != 1:
        raise MisatoError(f"{path}: prompt embeddings must be [L, D] or [1, L, D], got {tuple(tensor.shape)}")
    return tensor.float()


def save_prompt_embeds(path: str | os.PathLike, embeds: torch.Tensor) -> None:
    """Write learned prompt embeddings in the format :func:`load_prompt_embeds` reads (safetensors)."""
    from safetensors.torch import save_file

    save_file({PROMPT_EMBEDS_KEY: embeds.detach().cpu().contiguous()}, str(path))
