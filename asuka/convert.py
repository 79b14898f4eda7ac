"""Loading original checkpoints into the ASUKA modules, with strict key checks and a readable report.

- MAE-FAR / ASUKA MAE (``mae_300.pth``): ``{"model": state_dict}`` whose names are :class:`~asuka.models.MAEPrior`'s
  own (MAE-FAR layout), so loading is a strict name and shape check.
- Asymmetric-VQGAN / ASUKA decoders: PyTorch-Lightning checkpoints ``{"state_dict": {...}}`` in the latent-diffusion
  (``ldm``) naming — ``decoder.conv_in``, ``decoder.mid.block_1``, ``decoder.mid.attn_1.{q,k,v,proj_out}`` (1×1 convs),
  ``decoder.up.{level}.block.{j}``, ``decoder.up.{level}.upsample.conv``, ``decoder.norm_out``, ``decoder.conv_out``,
  the condition encoder as ``decoder.encoder.layers.{i}`` and ``post_quant_conv`` at the top level — mapped onto
  :class:`~asuka.models.InpaintingDecoder` (diffusers naming). ``up.0`` is the full-resolution level (diffusers'
  last up block). Encoder, quantiser and loss weights in the file are ignored (reported as skipped).
- Asymmetric-VQGAN in diffusers' format (an ``AsymmetricAutoencoderKL`` folder): ``decoder.*`` keys already in
  diffusers naming, condition encoder under ``decoder.condition_encoder``; dimensions from its ``config.json``.
- Alignment module: a file holding :class:`~asuka.models.PriorAlignment`'s own state dict.

Files are read by :mod:`misato.checkpoint` (``torch.load(..., weights_only=True)`` or safetensors; nothing executes
pickled code) and loaded with its strict loader, which returns / raises one :class:`~misato.checkpoint.LoadReport`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from misato.checkpoint import load_strict, read_state_dict
from misato.errors import MisatoError

StateDict = dict[str, torch.Tensor]


# -------------------------------------------------------------------------------------------- diffusers folders


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object of a model or scheduler config file (``config.json``, ``scheduler_config.json``).

    Raises:
        MisatoError: naming the file: missing, unreadable, not UTF-8 JSON, or not a JSON object.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise MisatoError(f"{path}: missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MisatoError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise MisatoError(f"{path}: not UTF-8 text (byte {error.start} cannot be decoded)") from None
    except ValueError as error:
        raise MisatoError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise MisatoError(f"{path}: expected a JSON object of settings, got {type(content).__name__}")
    return content


def _reason(error: Exception) -> str:
    """A library exception's first sentence on one line: without diffusers' advice or torch's list of overloads."""
    text = (str(error).strip().splitlines() or [""])[0]
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0] or type(error).__name__


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a diffusers model folder: ``diffusion_pytorch_model*.safetensors`` (one, or the shards
    of a sharded model), else ``*.bin``."""
    return sorted(folder.glob("diffusion_pytorch_model*.safetensors")) or sorted(folder.glob("*.bin"))


def load_pretrained_strict(model_class, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """``model_class.from_pretrained(folder, local_files_only=True)`` for a diffusers ``ModelMixin``, quietly
    (:func:`misato.quiet.quiet_loading`) and strictly: every tensor of the model must come from the weight files
    and every tensor of the files must be used (diffusers would only log the difference and keep random or empty
    tensors).

    Raises:
        MisatoError: naming ``folder`` (or its ``config.json``): not a folder, a bad config file, no weight file,
            settings the model cannot be built from, weights of another shape (the first one diffusers reports), or
            missing / unexpected keys (listed as :class:`~misato.checkpoint.LoadReport` does).
    """
    from misato.checkpoint import LoadReport
    from misato.quiet import quiet_loading

    folder = Path(folder)
    if not folder.is_dir():
        raise MisatoError(f"{folder}: not a diffusers model folder")
    read_config_json(folder / "config.json")
    if not weight_files(folder):
        raise MisatoError(f"{folder}: no weight file (diffusion_pytorch_model.safetensors)")
    if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
        raise MisatoError(f"torch_dtype must be a torch.dtype such as torch.float16, got {torch_dtype!r}")
    dtype = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    with quiet_loading():
        try:
            model, info = model_class.from_pretrained(folder, local_files_only=True, output_loading_info=True, **dtype)
        except TypeError as error:  # raised while the model is built from its settings
            raise MisatoError(f"{folder / 'config.json'}: cannot build {model_class.__name__} from it "
                              f"({_reason(error)})") from None
        except (OSError, ValueError, RuntimeError) as error:  # unreadable weights, wrong shapes
            raise MisatoError(f"{folder}: cannot load {model_class.__name__} from it ({_reason(error)})") from None
    report = LoadReport(str(folder), missing=sorted(info["missing_keys"]), unexpected=sorted(info["unexpected_keys"]))
    if not report.ok:
        raise MisatoError(f"{report}; expected {model_class.__name__} weights")
    return model


def load_scheduler(config_file: str | os.PathLike, scheduler_class=None):
    """A diffusers scheduler from its ``scheduler_config.json``, quietly: of ``scheduler_class``, or of the class
    the file names (``_class_name``).

    Raises:
        MisatoError: naming the file: unreadable or not a JSON object, a ``_class_name`` that is not a diffusers
            scheduler, or settings the scheduler refuses (a wrong type, an unknown ``beta_schedule``).
    """
    import diffusers

    from misato.quiet import quiet_loading

    config = read_config_json(config_file)
    if scheduler_class is None:
        scheduler_class = getattr(diffusers, str(config.get("_class_name")), None)
        if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
            raise MisatoError(f"{config_file}: _class_name {config.get('_class_name')!r} is not a diffusers scheduler")
    with quiet_loading():  # a config of another diffusers version logs its unknown keys
        try:
            return scheduler_class.from_config(config)
        except (TypeError, ValueError, NotImplementedError) as error:
            raise MisatoError(f"{config_file}: cannot build {scheduler_class.__name__} from it ({_reason(error)})") from None


# --------------------------------------------------------------------------------------------------------- MAE


def mae_config_from_state_dict(state: StateDict, source: str = "the state dict") -> dict[str, Any]:
    """MAEPrior config read off an MAE-FAR state dict's shapes (heads follow ViT conventions: 64 channels per
    encoder head, 32 per decoder head, as ViT-B's 12 and the MAE decoder's 16); ``source`` names it in errors."""
    try:
        embed_dim = state["pos_embed"].shape[-1]
        tokens = state["pos_embed"].shape[1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        decoder_dim = state["decoder_pos_embed"].shape[-1]
    except KeyError as error:
        raise MisatoError(f"{source}: not an MAE-FAR checkpoint (key {error} is missing)") from None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    decoder_depth = len({k.split(".")[1] for k in state if k.startswith("decoder_blocks.")})
    grid = int(round(tokens ** 0.5))
    return {
        "image_size": grid * patch, "patch_size": patch, "embed_dim": embed_dim, "depth": depth,
        "num_heads": max(1, embed_dim // 64), "decoder_embed_dim": decoder_dim, "decoder_depth": decoder_depth,
        "decoder_num_heads": max(1, decoder_dim // 32), "prior_layers": min(6, decoder_depth),
        "partial_token_embedding": "decoder_patch_embed.proj.weight" in state,
    }


def load_mae_checkpoint(path: str | os.PathLike, **overrides: Any):
    """An :class:`~asuka.models.MAEPrior` built from and loaded with an MAE-FAR checkpoint (strict)."""
    from asuka.models.mae import MAEPrior

    state = read_state_dict(path, "the MAE prior", wrappers=("model", "state_dict"))
    model = MAEPrior(**{**mae_config_from_state_dict(state, str(path)), **overrides})
    load_strict(model, state, str(path))
    return model


# ----------------------------------------------------------------------------------------------------- decoder

_ATTENTION = {"q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0", "norm": "group_norm"}


def ldm_autoencoder_key(key: str, levels: int | None = None) -> str | None:
    """One half of an LDM/BFL autoencoder (a key without its ``encoder.``/``decoder.`` prefix) → the diffusers
    ``Encoder``/``Decoder`` name, or None if the key is not one of theirs.

    ``levels`` is the number of ``up.*`` levels (LDM counts them from the lowest resolution, diffusers from the
    highest); without it ``up.*`` keys are not recognised (an encoder has none). ``nin_shortcut`` becomes
    ``conv_shortcut``.
    """
    rules = (
        (r"^(conv_in|conv_out)\.", lambda m: f"{m[1]}."),
        (r"^norm_out\.", lambda m: "conv_norm_out."),
        (r"^mid\.block_(\d)\.", lambda m: f"mid_block.resnets.{int(m[1]) - 1}."),
        (r"^mid\.attn_1\.(q|k|v|proj_out|norm)\.", lambda m: f"mid_block.attentions.0.{_ATTENTION[m[1]]}."),
        (r"^down\.(\d+)\.block\.(\d+)\.", lambda m: f"down_blocks.{m[1]}.resnets.{m[2]}."),
        (r"^down\.(\d+)\.downsample\.conv\.", lambda m: f"down_blocks.{m[1]}.downsamplers.0.conv."),
        (r"^up\.(\d+)\.block\.(\d+)\.", lambda m: f"up_blocks.{levels - 1 - int(m[1])}.resnets.{m[2]}."),
        (r"^up\.(\d+)\.upsample\.conv\.", lambda m: f"up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.conv."),
    )
    for pattern, replace in rules:
        match = re.match(pattern, key)
        if match:
            if key.startswith("up.") and levels is None:
                return None
            return (replace(match) + key[match.end():]).replace(".nin_shortcut.", ".conv_shortcut.")
    return None


def ldm_tensor(new_key: str, value: torch.Tensor) -> torch.Tensor:
    """LDM stores the mid attention's q/k/v/proj_out as 1×1 convolutions; diffusers as linear layers."""
    if ".attentions.0.to_" in new_key and new_key.endswith("weight") and value.ndim == 4:
        return value[:, :, 0, 0]
    return value


def convert_ldm_decoder_state_dict(state: StateDict) -> tuple[StateDict, list[str]]:
    """Lightning/ldm decoder checkpoint → (:class:`~asuka.models.InpaintingDecoder` state dict, ignored keys).

    ``decoder.encoder.*`` (the condition encoder) → ``condition_encoder.*``; the other ``decoder.*`` keys follow
    :func:`ldm_autoencoder_key` under ``decoder.``; ``post_quant_conv.*`` is kept as it is.
    """
    levels = len({k.split(".")[2] for k in state if k.startswith("decoder.up.")})
    converted: StateDict = {}
    skipped = []
    for key, value in state.items():
        if key.startswith("post_quant_conv."):
            converted[key] = value
            continue
        new = None
        if key.startswith("decoder.encoder."):
            new = "condition_encoder." + key[len("decoder.encoder."):]
        elif key.startswith("decoder."):
            inner = ldm_autoencoder_key(key[len("decoder."):], levels)
            new = None if inner is None else "decoder." + inner
        if new is None:
            skipped.append(key)
            continue
        converted[new] = ldm_tensor(new, value)
    return converted, skipped


def decoder_config_from_state_dict(converted: StateDict, norm_num_groups: int = 32,
                                  source: str = "the state dict") -> dict[str, Any]:
    """InpaintingDecoder config read off a converted state dict's shapes (``norm_num_groups`` cannot be read off
    weights: pass the SD VAE's); ``source`` names it in errors."""
    try:
        latent = converted["decoder.conv_in.weight"].shape[1]
        out = converted["decoder.conv_out.weight"].shape[0]
        condition_in = converted["condition_encoder.layers.0.weight"].shape[1]
    except KeyError as error:
        raise MisatoError(f"{source}: not an inpainting-decoder checkpoint ({error} is missing after key "
                          "mapping)") from None
    levels = len({k.split(".")[2] for k in converted if k.startswith("decoder.up_blocks.")})
    widths = [converted[f"decoder.up_blocks.{levels - 1 - i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    resnets = len({k.split(".")[4] for k in converted if k.startswith("decoder.up_blocks.0.resnets.")})
    if condition_in not in (out, out + 1):
        raise MisatoError(f"{source}: its condition encoder takes {condition_in} channels; expected {out} or "
                          f"{out + 1}")
    return {
        "latent_channels": latent, "out_channels": out, "block_out_channels": tuple(widths),
        "layers_per_block": resnets - 1, "norm_num_groups": norm_num_groups,
        "asymmetric_vqgan": condition_in == out, "use_post_quant_conv": "post_quant_conv.weight" in converted,
    }


def convert_diffusers_asymmetric_state_dict(state: StateDict) -> tuple[StateDict, list[str]]:
    """A diffusers ``AsymmetricAutoencoderKL`` state dict → (InpaintingDecoder state dict, ignored keys): the decoder
    keeps its names except ``decoder.condition_encoder.*`` → ``condition_encoder.*``; the encoder is ignored."""
    converted: StateDict = {}
    skipped = []
    for key, value in state.items():
        if key.startswith("decoder.condition_encoder."):
            converted[key[len("decoder."):]] = value
        elif key.startswith(("decoder.", "post_quant_conv.")):
            converted[key] = value
        else:
            skipped.append(key)
    return converted, skipped


def _read_diffusers_asymmetric(folder: Path) -> tuple[StateDict, list[str], dict[str, Any]]:
    """State dict and InpaintingDecoder config of a diffusers ``AsymmetricAutoencoderKL`` folder."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MisatoError(f"{folder}: not a diffusers model folder (no config.json)")
    config = read_config_json(config_path)
    if config.get("_class_name") != "AsymmetricAutoencoderKL":
        raise MisatoError(f"{folder}: expected an AsymmetricAutoencoderKL folder, found {config.get('_class_name')}")
    weights = weight_files(folder)
    if len(weights) != 1:
        raise MisatoError(f"{folder}: expected one diffusion_pytorch_model weight file, found {len(weights)}")
    converted, skipped = convert_diffusers_asymmetric_state_dict(read_state_dict(weights[0], "the Asymmetric-VQGAN decoder"))
    decoder_config = {
        "latent_channels": config.get("latent_channels", 4), "out_channels": config.get("out_channels", 3),
        "block_out_channels": tuple(config["up_block_out_channels"]),
        "layers_per_block": config["layers_per_up_block"], "norm_num_groups": config.get("norm_num_groups", 32),
        "act_fn": config.get("act_fn", "silu"), "up_block_types": tuple(config["up_block_types"]),
        "asymmetric_vqgan": True, "use_post_quant_conv": True,
    }
    return converted, skipped, decoder_config


def load_decoder_checkpoint(path: str | os.PathLike, vae=None, asymmetric_vqgan: bool | None = None):
    """An :class:`~asuka.models.InpaintingDecoder` from an Asymmetric-VQGAN or ASUKA checkpoint.

    Args:
        path: an original Lightning checkpoint file (ldm naming), a diffusers ``AsymmetricAutoencoderKL`` folder
            (as published on the Hugging Face Hub), or an ``InpaintingDecoder.save_pretrained`` folder (loaded as
            saved; ``vae`` and ``asymmetric_vqgan`` are not used).
        vae: the SD ``AutoencoderKL``: supplies ``norm_num_groups`` and ``post_quant_conv`` when the file has none.
        asymmetric_vqgan: force the variant flag (default: read from the condition encoder's input channels —
            3 = Asymmetric VQGAN, 4 = ASUKA).
    """
    from asuka.models.decoder import InpaintingDecoder

    config_file = Path(path) / "config.json"
    if config_file.is_file() and read_config_json(config_file).get("_class_name") == InpaintingDecoder.__name__:
        return load_pretrained_strict(InpaintingDecoder, path)
    if Path(path).is_dir():
        converted, skipped, config = _read_diffusers_asymmetric(Path(path))
    else:
        converted, skipped = convert_ldm_decoder_state_dict(read_state_dict(path, "an inpainting decoder"))
        groups = vae.config.norm_num_groups if vae is not None else 32
        config = decoder_config_from_state_dict(converted, norm_num_groups=groups, source=str(path))
    if asymmetric_vqgan is not None:
        config["asymmetric_vqgan"] = asymmetric_vqgan
    if not config["use_post_quant_conv"] and vae is not None and vae.post_quant_conv is not None:
        config["use_post_quant_conv"] = True
        converted.update({f"post_quant_conv.{k}": v for k, v in vae.post_quant_conv.state_dict().items()})
    decoder = InpaintingDecoder(**config)
    load_strict(decoder, converted, str(path), skipped=skipped)
    return decoder


def load_alignment_checkpoint(path: str | os.PathLike, cross_attention_dim: int, prior_dim: int = 512, **config: Any):
    """A :class:`~asuka.models.PriorAlignment` loaded (strictly) from a file holding its own state dict; the kind
    (self/cross attention) and the number of blocks are read off the keys, the rest comes from ``config``."""
    from asuka.models.alignment import PriorAlignment, default_num_heads

    state = read_state_dict(path, "the alignment module")
    inferred = {
        "num_heads": default_num_heads(cross_attention_dim),
        "kind": "cross_attention" if "queries" in state else "self_attention",
        "num_layers": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
    }
    if "queries" in state:
        inferred["num_queries"] = state["queries"].shape[1]
    module = PriorAlignment(prior_dim=prior_dim, cross_attention_dim=cross_attention_dim, **{**inferred, **config})
    load_strict(module, state, str(path))
    return module
