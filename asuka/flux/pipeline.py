"""ASUKA-FLUX: FLUX.1-Fill conditioned on the aligned MAE prior instead of T5/CLIP, with ASUKA's decoder.

The released model (Hugging Face ``yikaiwang/ASUKA-FLUX.1-Fill``) on diffusers' FLUX components. What differs from
the SD-1.5 ASUKA (:mod:`asuka.pipeline`) is the backbone and the alignment block type only; the MAE prior
(:class:`~asuka.models.MAEPrior`), the decoder (:class:`~asuka.models.InpaintingDecoder`, here z = 16), the
input conversion and the output/paste-back code are shared.

Flow for one call (shapes at 512 × 512, FLUX.1-Fill):

1. image → ``[B, 3, 512, 512]`` in [0, 1]; mask → ``[B, 1, 512, 512]`` in {0, 1}, **1 = hole**.
2. condition: ``mae(image, mask)`` ``[B, 256, 512]`` → ``alignment_t5`` → ``txt [B, 256, 4096]`` and
   ``alignment_clip`` → mean over tokens → ``vec [B, 768]``; each mixed with the shipped "none" features as
   ``none + w·(feat − none)`` (``condition_weight`` w, 0.5 as released; w = 0 is the none features exactly).
   Or ``prompt_embeds`` / ``pooled_prompt_embeds`` given by the caller (plain FLUX.1-Fill).
3. FluxFillPipeline's sampling, in its random-number order: the generator first draws the image-latent sample
   diffusers draws (and, at strength 1, discards), then the initial noise ``[B, 16, 64, 64]``, then the posterior
   sample of ``vae.encode(image · (1 − mask))``; Fill input = packed masked-image latents ⊕ packed 8×8 mask
   (``[B, 1024, 64 + 256]``); ``num_inference_steps`` flow-matching Euler steps with the resolution-shifted
   schedule, distilled guidance ``guidance_scale`` (30).
4. latents unscaled as ``z / 0.3611 + 0.1159`` (the VAE's scaling/shift factors) and decoded by ASUKA's
   conditional ``decoder`` (conditioned on the masked image ⊕ mask) or, without one, the FLUX AE decoder;
   known pixels pasted back unless ``paste_back=False``.

With ``prompt_embeds``, ``decoder=None`` and ``paste_back=False`` this is bit-identical to diffusers'
``FluxFillPipeline`` (strength 1) on the same inputs and generator (``tests/asuka/test_flux_pipeline.py``).
No text encoder is part of this pipeline.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_fill import calculate_shift
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from asuka.models.decoder import InpaintingDecoder
from asuka.models.flux_alignment import FluxPriorAlignment, NoneFeatures
from asuka.models.mae import MAEPrior
from asuka.pipeline import (ASUKAInpaintPipeline, ImageInput, check_image_batch, check_sampling, image_to_tensor,
                            mae_inputs, mask_to_tensor, run_inpainting_decoder)

DEFAULT_CONDITION_WEIGHT = 0.5
DEFAULT_GUIDANCE = 30.0


def fill_input_width(latent_channels: int, vae_scale_factor: int) -> int:
    """FLUX.1-Fill's transformer input width: packed noisy latents 4·C + packed masked-image latents 4·C + packed
    ``f × f`` mask 4·f² (384 for C = 16, f = 8; plain FLUX has 4·C = 64)."""
    return 8 * latent_channels + 4 * vae_scale_factor ** 2


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` → 2×2 patches ``[B, (h/2)(w/2), 4C]`` (FLUX's token layout, channel-major in a patch)."""
    batch, channels, height, width = latents.shape
    x = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack` for a latent grid of ``height × width``."""
    batch, _, channels = tokens.shape
    x = tokens.view(batch, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, channels // 4, height, width)


class ASUKAFluxFillPipeline(DiffusionPipeline):
    """ASUKA on FLUX.1-Fill (see the module docstring for the flow).

    Components: ``scheduler`` (``FlowMatchEulerDiscreteScheduler``), ``vae`` (16-channel ``AutoencoderKL`` with
    ``scaling_factor`` 0.3611 / ``shift_factor`` 0.1159), ``transformer`` (``FluxTransformer2DModel`` with the
    Fill input width), ``mae`` (:class:`~asuka.models.MAEPrior`), ``alignment_t5`` / ``alignment_clip``
    (:class:`~asuka.models.flux_alignment.FluxPriorAlignment`, d = 4096 / 768), ``none_features``
    (:class:`NoneFeatures`) and ``decoder`` (:class:`~asuka.models.InpaintingDecoder`, 16 latent channels).
    ``mae``, the alignments and ``none_features`` may be None when every call passes ``prompt_embeds``;
    ``decoder`` None means the FLUX AE decoder.
    """

    model_cpu_offload_seq = "mae->alignment_t5->alignment_clip->vae->transformer->decoder"
    _optional_components = ["mae", "alignment_t5", "alignment_clip", "none_features", "decoder"]
    _exclude_from_cpu_offload = ["none_features"]  # read directly, never called: kept on the execution device

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        transformer: FluxTransformer2DModel,
        mae: MAEPrior | None = None,
        alignment_t5: FluxPriorAlignment | None = None,
        alignment_clip: FluxPriorAlignment | None = None,
        none_features: NoneFeatures | None = None,
        decoder: InpaintingDecoder | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(scheduler=scheduler, vae=vae, transformer=transformer, mae=mae,
                              alignment_t5=alignment_t5, alignment_clip=alignment_clip,
                              none_features=none_features, decoder=decoder)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ checks

    def check_components(self) -> None:
        """Raise ``ValueError`` for a transformer without the Fill input width or a decoder for other latents."""
        channels = self.vae.config.latent_channels
        expected = fill_input_width(channels, self.vae_scale_factor)
        width = self.transformer.config.in_channels
        if width != expected:
            raise ValueError(f"the transformer takes {width} input channels; a FLUX.1-Fill transformer for this "
                             f"{channels}-channel VAE takes {expected} (a plain FLUX transformer takes {4 * channels})")
        if self.decoder is not None and self.decoder.config.latent_channels != channels:
            raise ValueError(f"the decoder decodes {self.decoder.config.latent_channels}-channel latents but the "
                             f"VAE has {channels}")

    def check_inputs(self, image: torch.Tensor, mask: torch.Tensor, num_inference_steps: int, output_type: str,
                     prompt_embeds: torch.Tensor | None, pooled_prompt_embeds: torch.Tensor | None,
                     mae_preprocessing: str = "official") -> None:
        """Raise ``ValueError`` for inputs the pipeline cannot process (tensors already converted)."""
        self.check_components()
        check_image_batch(image, mask, 2 * self.vae_scale_factor, "`asuka-flux`/`flux-fill`")
        check_sampling(num_inference_steps, output_type, mae_preprocessing)
        if (prompt_embeds is None) != (pooled_prompt_embeds is None):
            raise ValueError("pass prompt_embeds and pooled_prompt_embeds together")
        if prompt_embeds is None:
            missing = [name for name in ("mae", "alignment_t5", "alignment_clip", "none_features")
                       if getattr(self, name, None) is None]
            if missing:
                raise ValueError(f"this pipeline has no {', '.join(missing)}; ASUKA-FLUX needs them "
                                 "(or pass prompt_embeds and pooled_prompt_embeds for plain FLUX.1-Fill)")

    # ------------------------------------------------------------------ stages

    def encode_prior(self, image: torch.Tensor, mask: torch.Tensor, condition_weight: float = DEFAULT_CONDITION_WEIGHT,
                     mae_preprocessing: str = "official") -> tuple[torch.Tensor, torch.Tensor]:
        """ASUKA's condition: ``image [B, 3, H, W]`` in [0, 1], ``mask [B, 1, H, W]`` → ``txt [B, L, d_t5]`` and
        ``vec [B, d_clip]``, each ``none + w·(feat − none)`` with the shipped none features.

        ``mae_preprocessing``: ``"official"`` resizes to the MAE size as the release does
        (:func:`~asuka.pipeline.official_mae_inputs`: cv2 area on uint8, nearest mask with hole ≥ 0.5);
        ``"area"`` leaves it to :class:`~asuka.models.MAEPrior` (torch area on floats, hole if any source pixel is).
        """
        prior = self.mae(*mae_inputs(self.mae, image, mask, mae_preprocessing))
        txt = self.alignment_t5(prior.to(self.alignment_t5.device, self.alignment_t5.dtype))
        vec = self.alignment_clip(prior.to(self.alignment_clip.device, self.alignment_clip.dtype)).mean(dim=1)
        none_txt = self.none_features.txt.to(txt.device, txt.dtype)
        none_vec = self.none_features.vec.to(vec.device, vec.dtype)
        if none_txt.shape[1:] != txt.shape[1:] or none_vec.shape[1:] != vec.shape[1:]:
            raise ValueError(f"none features {tuple(none_txt.shape)}/{tuple(none_vec.shape)} do not match the "
                             f"aligned prior {tuple(txt.shape)}/{tuple(vec.shape)}")
        return none_txt + condition_weight * (txt - none_txt), none_vec + condition_weight * (vec - none_vec)

    def _sample_posterior(self, pixels: torch.Tensor, generator: torch.Generator | list | None) -> torch.Tensor:
        """``pixels [B, 3, H, W]`` in [−1, 1] → ``(z − shift)·scale`` sampled from the posterior (one batched
        encoder pass, one draw per generator when a list is given, as FluxFillPipeline does)."""
        latents = self.vae.encode(pixels).latent_dist.sample(generator)
        return (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def _skip_image_latent_sample(self, shape: tuple[int, ...], generator, device, dtype) -> None:
        """Advance ``generator`` past the posterior sample of the full image that FluxFillPipeline draws and, at
        strength 1, multiplies by zero: same random stream without running the encoder on it."""
        if isinstance(generator, list):
            for g in generator:
                randn_tensor((1, *shape[1:]), generator=g, device=device, dtype=dtype)
        elif generator is not None:
            randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def _timesteps(self, num_inference_steps: int, image_seq_len: int, device: torch.device) -> torch.Tensor:
        """FluxFillPipeline's schedule: sigmas linspace(1, 1/n, n) shifted by ``mu`` of the token count."""
        config = self.scheduler.config
        mu = calculate_shift(image_seq_len, config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        self.scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        return self.scheduler.timesteps

    def decode_latents(self, latents: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, 16, h, w]`` → ``[B, 3, H, W]`` in about [−1, 1]: unscaled ``z / scale + shift``,
        then ASUKA's decoder (conditioned on ``pixels`` in [−1, 1] and ``mask``) or the FLUX AE decoder."""
        unscaled = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        if self.decoder is None:
            return self.vae.decode(unscaled, return_dict=False)[0]
        return run_inpainting_decoder(self.decoder, unscaled, pixels, mask)

    # ------------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        condition_weight: float = DEFAULT_CONDITION_WEIGHT,
        paste_back: bool = True,
        mae_preprocessing: str = "official",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Inpaint.

        Args:
            image: RGB images (PIL, ``uint8 [H, W, 3]``, float arrays/tensors in [0, 1]); H, W multiples of 16.
            mask_image: masks of the same size, **1/white = hole** (repainted), 0 = keep.
            num_inference_steps: flow-matching steps (50 as released).
            guidance_scale: FLUX's distilled guidance (30 as released; there is no classifier-free guidance).
            generator: ``torch.Generator`` (a CPU generator gives machine-independent noise) or one per image.
            output_type: ``"pil"``, ``"np"`` (float ``[B, H, W, 3]`` in [0, 1]), ``"pt"`` or ``"latent"``
                (packed ``[B, tokens, 64]``).
            prompt_embeds, pooled_prompt_embeds: ``[B or 1, L, 4096]`` and ``[B or 1, 768]`` T5/CLIP features
                used instead of the MAE prior (plain FLUX.1-Fill with a precomputed prompt).
            condition_weight: w in ``none + w·(feat − none)`` (0.5 as released; 1 = the aligned prior as is,
                0 = the none features exactly). Ignored with ``prompt_embeds``.
            paste_back: replace known pixels of the output by the input (exact in the known region).
            mae_preprocessing: ``"official"`` (the release's cv2 resizing of the MAE input, default) or ``"area"``
                (see :meth:`encode_prior`).
            return_dict: return an ``ImagePipelineOutput`` rather than a tuple.

        Samples whose mask has no hole are returned unchanged; a full-image hole is valid.
        """
        device = self._execution_device
        pixels01, mask = image_to_tensor(image), mask_to_tensor(mask_image)
        self.check_inputs(pixels01, mask, num_inference_steps, output_type, prompt_embeds, pooled_prompt_embeds,
                          mae_preprocessing)
        batch, (height, width) = pixels01.shape[0], pixels01.shape[-2:]
        pixels01, mask = pixels01.to(device), mask.to(device)
        has_hole = mask.flatten(1).amax(dim=1) > 0
        if output_type != "latent" and not bool(has_hole.any()):
            return ASUKAInpaintPipeline._output(pixels01, output_type, return_dict)

        if prompt_embeds is None:
            txt, vec = self.encode_prior(pixels01, mask, condition_weight, mae_preprocessing)
            dtype = self.transformer.dtype
        else:
            txt, vec = prompt_embeds.to(device), pooled_prompt_embeds.to(device)
            dtype = txt.dtype
            if txt.shape[0] == 1 and batch > 1:
                txt, vec = txt.expand(batch, -1, -1), vec.expand(batch, -1)
        txt, vec = txt.to(dtype), vec.to(dtype)
        txt_ids = torch.zeros(txt.shape[1], 3, device=device, dtype=self.transformer.dtype)

        channels, factor = self.vae.config.latent_channels, self.vae_scale_factor
        latent_h, latent_w = height // factor, width // factor
        image_ids = torch.zeros(latent_h // 2, latent_w // 2, 3)
        image_ids[..., 1] += torch.arange(latent_h // 2)[:, None]
        image_ids[..., 2] += torch.arange(latent_w // 2)[None, :]
        image_ids = image_ids.reshape(-1, 3).to(device=device, dtype=dtype)
        timesteps = self._timesteps(num_inference_steps, (latent_h // 2) * (latent_w // 2), device)

        shape = (batch, channels, latent_h, latent_w)
        self._skip_image_latent_sample(shape, generator, device, self.vae.dtype)
        latents = pack(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
        pixels = pixels01 * 2 - 1
        masked_latents = self._sample_posterior((pixels * (1 - mask)).to(self.vae.dtype), generator).to(dtype)
        mask_tokens = mask[:, 0].view(batch, latent_h, factor, latent_w, factor).permute(0, 2, 4, 1, 3)
        mask_tokens = pack(mask_tokens.reshape(batch, factor * factor, latent_h, latent_w)).to(dtype)
        fill_condition = torch.cat([pack(masked_latents), mask_tokens], dim=-1)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32).expand(batch)

        with self.progress_bar(total=len(timesteps)) as bar:
            for t in timesteps:
                noise_pred = self.transformer(
                    hidden_states=torch.cat([latents, fill_condition], dim=2),
                    timestep=t.expand(batch).to(latents.dtype) / 1000,
                    guidance=guidance,
                    pooled_projections=vec,
                    encoder_hidden_states=txt,
                    txt_ids=txt_ids,
                    img_ids=image_ids,
                    return_dict=False,
                )[0]
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                bar.update()

        if output_type == "latent":
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=latents) if return_dict else (latents,)
        decoded = self.decode_latents(unpack(latents, latent_h, latent_w), pixels, mask)
        result = ASUKAInpaintPipeline._compose(decoded, pixels01, mask, has_hole, paste_back)
        self.maybe_free_model_hooks()
        return ASUKAInpaintPipeline._output(result, output_type, return_dict)
