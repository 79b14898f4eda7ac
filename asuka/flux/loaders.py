"""The released ASUKA-FLUX files, read as they are (Hugging Face ``yikaiwang/ASUKA-FLUX.1-Fill``).

- ``asuka_alignment_t5.pt`` / ``asuka_alignment_clip.pt``: the state dicts of two ``nn.Sequential`` alignment
  modules (keys ``0.weight`` … ``5.bias``, ``modulation.lin`` included) → :func:`load_flux_alignment`.
- ``asuka_decoder.ckpt``: a PyTorch-Lightning checkpoint; ``state_dict`` holds the conditional decoder under
  ``decoder.*`` (original LDM names, z = 16, ``concat_mask``) and the FLUX AE encoder under ``encoder.*`` (BFL's
  names), which the official code loads into the autoencoder too → :func:`load_flux_decoder_checkpoint`.
- ``txt_256.pt`` ``[1, 256, 4096]`` and ``vec.pt`` ``[1, 768]``: the "none" features → :func:`load_none_features`.
- ``mae_300.pth``: MAE-FAR's ``{"model": …, "args": argparse.Namespace}`` → :func:`asuka.convert.load_mae_checkpoint`.

Every file is read by :func:`misato.checkpoint.read_lightning_checkpoint`: tensors and containers are rebuilt,
any other pickled object (``argparse.Namespace``, OmegaConf hyper-parameters) becomes an inert placeholder and
nothing it names is run. Loading is strict: every name and shape must match, and a
:class:`~misato.checkpoint.LoadReport` says what was ignored.
"""
from __future__ import annotations

import os
import re

import torch

from asuka import convert
from asuka.convert import StateDict
from misato.checkpoint import LoadReport, load_strict, read_checkpoint, read_lightning_checkpoint
from misato.errors import MisatoError

RELEASE_REPO = "yikaiwang/ASUKA-FLUX.1-Fill"
RELEASE_FILES = {
    "decoder": "asuka_decoder.ckpt",
    "alignment_t5": "asuka_alignment_t5.pt",
    "alignment_clip": "asuka_alignment_clip.pt",
    "none_txt": "txt_256.pt",
    "none_vec": "vec.pt",
    "mae": "mae_300.pth",
}
"""Component → official file name of the release (also the weights-registry entries ``asuka-flux-<component>``)."""


def read_release_state(path: str | os.PathLike, keys: tuple[str, ...] = ("state_dict", "model")) -> StateDict:
    """The state dict of a released file, found under the first of ``keys`` (``()`` = the top level)."""
    return read_lightning_checkpoint(path, "the ASUKA-FLUX release", wrappers=keys).state_dict


# --------------------------------------------------------------------------------------------------- alignment


def load_flux_alignment(path: str | os.PathLike):
    """A :class:`~asuka.models.flux_alignment.FluxPriorAlignment` built from and strictly loaded with a released
    ``nn.Sequential`` state dict; widths, block count and heads (``dim`` ÷ the QK-norm width) are read off the
    shapes.

    Returns:
        ``(module, report)``.
    """
    from asuka.models.flux_alignment import FluxPriorAlignment

    state = read_release_state(path, keys=())
    blocks = sorted({int(k.split(".")[0]) for k in state if re.match(r"^\d+\.linear1\.weight$", k)})
    if "0.weight" not in state or state["0.weight"].ndim != 2 or not blocks or "1.norm.query_norm.scale" not in state:
        raise MisatoError(f"{path}: not an ASUKA-FLUX alignment module (expected nn.Sequential keys 0.weight, "
                          "1.linear1.weight, 1.norm.query_norm.scale, …)")
    dim, prior_dim = state["0.weight"].shape
    heads = dim // state["1.norm.query_norm.scale"].shape[0]
    module = FluxPriorAlignment(prior_dim=prior_dim, dim=dim, num_layers=len(blocks), num_heads=heads)
    return module, load_strict(module, state, str(path))


# ----------------------------------------------------------------------------------------------- none features


def _read_tensor(path: str | os.PathLike) -> torch.Tensor:
    content = read_checkpoint(path, "an ASUKA-FLUX none feature")
    if not isinstance(content, torch.Tensor):
        raise MisatoError(f"{path}: expected one tensor, found {type(content).__name__}")
    return content


def load_none_features(txt_path: str | os.PathLike, vec_path: str | os.PathLike, txt_dim: int | None = None,
                       vec_dim: int | None = None):
    """:class:`~asuka.models.flux_alignment.NoneFeatures` from ``txt_256.pt`` ``[1, L, txt_dim]`` and ``vec.pt``
    ``[1, vec_dim]``; the widths are checked against the alignment modules' when given."""
    from asuka.models.flux_alignment import NoneFeatures

    txt, vec = _read_tensor(txt_path), _read_tensor(vec_path)
    if txt.ndim != 3 or txt.shape[0] != 1 or (txt_dim is not None and txt.shape[2] != txt_dim):
        raise MisatoError(f"{txt_path}: expected the T5 none feature [1, L, {txt_dim or 'D'}], got {tuple(txt.shape)}")
    if vec.ndim != 2 or vec.shape[0] != 1 or (vec_dim is not None and vec.shape[1] != vec_dim):
        raise MisatoError(f"{vec_path}: expected the CLIP none feature [1, {vec_dim or 'D'}], got {tuple(vec.shape)}")
    return NoneFeatures.from_tensors(txt.float(), vec.float())


# ------------------------------------------------------------------------------------------ decoder and encoder


def convert_ldm_encoder_state_dict(state: StateDict) -> tuple[StateDict, list[str]]:
    """The top-level ``encoder.*`` keys of an LDM/BFL autoencoder checkpoint → (diffusers ``Encoder`` state dict,
    ``encoder.*`` keys that do not map); the mid attention's 1×1 conv weights become linear weights."""
    converted: StateDict = {}
    unmapped = []
    for key, value in state.items():
        if not key.startswith("encoder."):
            continue
        new = convert.ldm_autoencoder_key(key[len("encoder."):])
        if new is None:
            unmapped.append(key)
            continue
        converted[new] = convert.ldm_tensor(new, value)
    return converted, unmapped


def load_flux_decoder_checkpoint(path: str | os.PathLike, vae) -> tuple[object, LoadReport, LoadReport | None]:
    """ASUKA's conditional decoder from ``asuka_decoder.ckpt`` and, as the official code does, the AE encoder
    weights of the same file copied into ``vae.encoder`` (in place).

    Args:
        path: the Lightning checkpoint (``state_dict`` with ``decoder.*`` LDM keys and ``encoder.*`` keys).
        vae: the FLUX ``AutoencoderKL`` (16 latent channels): its latent width is checked against the decoder's.
    Returns:
        ``(decoder, decoder_report, encoder_report)``; ``encoder_report`` is None when the file has no encoder.
    Raises:
        MisatoError: key or shape mismatches, or a decoder for another latent width.
    """
    from asuka.models.decoder import InpaintingDecoder

    state = read_release_state(path)
    converted, skipped = convert.convert_ldm_decoder_state_dict(state)
    config = convert.decoder_config_from_state_dict(converted, norm_num_groups=vae.config.norm_num_groups,
                                                    source=str(path))
    if config["latent_channels"] != vae.config.latent_channels:
        raise MisatoError(f"{path}: decodes {config['latent_channels']}-channel latents but the FLUX VAE has "
                          f"{vae.config.latent_channels}; this is not an ASUKA-FLUX decoder")
    decoder = InpaintingDecoder(**config)
    encoder_state, unmapped = convert_ldm_encoder_state_dict(state)
    decoder_skipped = [k for k in skipped if not k.startswith("encoder.")]
    decoder_report = load_strict(decoder, converted, f"{path} (decoder)", skipped=decoder_skipped)
    encoder_report = None
    if encoder_state or unmapped:
        if unmapped:
            raise MisatoError(f"{path}: encoder keys with no FLUX AE counterpart: {', '.join(unmapped[:6])}")
        encoder_report = load_strict(vae.encoder, encoder_state, f"{path} (AE encoder)")
    return decoder, decoder_report, encoder_report
