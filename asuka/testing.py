"""Tiny random ASUKA / SD-inpainting components (diffusers-style ``get_dummy_components``) for tests and benchmarks.

Every module has the real architecture at a toy width: the pipeline runs 2 steps on 64 × 64 in well under a second
on CPU. ``full_size=True`` gives the real SD-1.5-inpainting UNet and VAE sizes (random weights) for benchmarks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from misato.reproducibility import seeded

SD15_INPAINT_UNET = {
    "sample_size": 64, "in_channels": 9, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 512, "scaling_factor": 0.18215,
}
TINY_UNET = {
    "sample_size": 32, "in_channels": 9, "out_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 32,
}
TINY_VAE = {
    "block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 8, "latent_channels": 4,
}
TINY_MAE = {
    "image_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16,
    "decoder_depth": 3, "decoder_num_heads": 2, "prior_layers": 2,
}
TINY_ALIGNMENT = {"prior_dim": 16, "cross_attention_dim": 32, "num_layers": 2, "num_heads": 2}


def dummy_scheduler():
    """SD 1.5's DDIM scheduler settings."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def get_dummy_components(seed: int = 0, decoder: bool = True, full_size: bool = False) -> dict[str, Any]:
    """``vae``, ``unet``, ``scheduler``, ``mae``, ``alignment``, ``decoder`` (random, deterministic per seed).

    ``full_size``: SD-1.5-inpainting UNet and VAE, ViT-B MAE and the ASUKA alignment at their real sizes.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from asuka.models import InpaintingDecoder, MAEPrior, PriorAlignment

    with seeded(seed):
        unet = UNet2DConditionModel(**(SD15_INPAINT_UNET if full_size else TINY_UNET))
        vae = AutoencoderKL(**(SD15_VAE if full_size else TINY_VAE))
        mae = MAEPrior() if full_size else MAEPrior(**TINY_MAE)
        alignment = PriorAlignment() if full_size else PriorAlignment(**TINY_ALIGNMENT)
        components: dict[str, Any] = {
            "vae": vae.eval(), "unet": unet.eval(), "scheduler": dummy_scheduler(), "mae": mae.eval(),
            "alignment": alignment.eval(), "decoder": InpaintingDecoder.from_vae(vae).eval() if decoder else None,
        }
    return components


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer folder (``vocab.json``, ``merges.txt``) built from open_clip's bundled BPE, no hub."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(token, token): index for token, index in simple.encoder.items()}
    ranked = sorted(simple.bpe_ranks.items(), key=lambda item: item[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair, _ in ranked) + "\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77).save_pretrained(folder)


def write_dummy_sd_inpaint_folder(folder: Path, seed: int = 0, text_encoder: bool = True) -> Path:
    """A diffusers SD-inpainting folder with tiny random ``unet``, ``vae``, ``scheduler`` (and a tiny CLIP
    ``text_encoder`` + ``tokenizer``), loadable with ``local_files_only=True``."""
    from diffusers import StableDiffusionInpaintPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    components = get_dummy_components(seed=seed, decoder=False)
    pipe_parts: dict[str, Any] = {"vae": components["vae"], "unet": components["unet"],
                                  "scheduler": components["scheduler"], "text_encoder": None, "tokenizer": None}
    if text_encoder:
        config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=49406,
                                eos_token_id=49407, pad_token_id=49407)
        with seeded(seed + 1):
            pipe_parts["text_encoder"] = CLIPTextModel(config).eval()
        write_tokenizer(folder / "tokenizer")
        pipe_parts["tokenizer"] = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    pipe = StableDiffusionInpaintPipeline(**pipe_parts, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ------------------------------------------------------------------------------------------------ ASUKA-FLUX

FLUX_SCHEDULER = {
    "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
}
FLUX_FILL_TRANSFORMER = {
    "patch_size": 1, "in_channels": 384, "out_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 16,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False,
    "sample_size": 1024,
}
# 16 latent channels and the 8x VAE keep the Fill input width 4·16 + 4·16 + 4·64 = 384 at toy sizes
TINY_FLUX_TRANSFORMER = {
    **FLUX_FILL_TRANSFORMER, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 16, "axes_dims_rope": (4, 4, 8),
}
TINY_FLUX_VAE = {**TINY_VAE, "latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159,
                 "use_quant_conv": False, "use_post_quant_conv": False}
TINY_FLUX_ALIGNMENT_T5 = {"prior_dim": 16, "dim": 32, "num_layers": 2, "num_heads": 2}
TINY_FLUX_ALIGNMENT_CLIP = {"prior_dim": 16, "dim": 16, "num_layers": 2, "num_heads": 2}


def get_dummy_flux_components(seed: int = 0, decoder: bool = True, prior_tokens: int = 16) -> dict[str, Any]:
    """Tiny random ASUKA-FLUX components (``scheduler``, ``vae``, ``transformer``, ``mae``, ``alignment_t5``,
    ``alignment_clip``, ``none_features``, ``decoder``), deterministic per seed; 64 × 64 inputs run in seconds."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from asuka.models import InpaintingDecoder, MAEPrior
    from asuka.models.flux_alignment import FluxPriorAlignment, NoneFeatures

    with seeded(seed):
        vae = AutoencoderKL(**TINY_FLUX_VAE)
        components: dict[str, Any] = {
            "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
            "vae": vae.eval(),
            "transformer": FluxTransformer2DModel(**TINY_FLUX_TRANSFORMER).eval(),
            "mae": MAEPrior(**TINY_MAE).eval(),
            "alignment_t5": FluxPriorAlignment(**TINY_FLUX_ALIGNMENT_T5).eval(),
            "alignment_clip": FluxPriorAlignment(**TINY_FLUX_ALIGNMENT_CLIP).eval(),
            "none_features": NoneFeatures.from_tensors(torch.randn(1, prior_tokens, 32), torch.randn(1, 16)).eval(),
            "decoder": None,
        }
        if decoder:
            components["decoder"] = InpaintingDecoder.from_vae(vae).eval()
    return components


def write_dummy_flux_fill_folder(folder: Path, seed: int = 0) -> Path:
    """A diffusers FLUX.1-Fill folder (``transformer/``, ``vae/``, ``scheduler/``; no text encoders) with the tiny
    random components of :func:`get_dummy_flux_components`."""
    components = get_dummy_flux_components(seed=seed, decoder=False)
    for name in ("transformer", "vae", "scheduler"):
        components[name].save_pretrained(Path(folder) / name)
    return Path(folder)
