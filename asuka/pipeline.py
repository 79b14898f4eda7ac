"""``ASUKAInpaintPipeline``: Stable Diffusion inpainting conditioned on an aligned MAE prior instead of text.

Flow for one call (shapes for a 512 × 512 input, SD 1.5):

1. image → ``[B, 3, 512, 512]`` in [−1, 1]; mask → ``[B, 1, 512, 512]`` in {0, 1}, **1 = hole** (white = repaint,
   the diffusers convention).
2. condition: ``mae(image, mask)`` ``[B, 256, 512]`` → ``alignment`` ``[B, 256, 768]`` = the UNet's
   ``encoder_hidden_states``; or ``prompt_embeds`` given by the caller (the SD baselines, :mod:`asuka.sd_variants`).
3. masked-image latents ``vae.encode(image · (1 − mask))`` (sampled with ``generator``) × scaling factor and the
   mask at latent size (nearest) are the UNet's 5 extra input channels; the noisy latent starts from
   ``randn(generator)`` (``strength = 1``) or the noised image latent.
4. ``num_inference_steps`` scheduler steps, no classifier-free guidance unless ``guidance_scale > 1`` and
   ``negative_prompt_embeds`` are given.
5. decode with the inpainting ``decoder`` (conditioned on the masked image) or, without one, the plain KL-VAE
   decoder; optionally paste the known pixels back.

With ``prompt_embeds``, ``decoder=None`` and ``paste_back=False`` this is the same computation, in the same
random-number order, as diffusers' ``StableDiffusionInpaintPipeline`` without guidance.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor

from asuka.convert import load_pretrained_strict, load_scheduler
from asuka.models.alignment import PriorAlignment
from asuka.models.decoder import InpaintingDecoder
from asuka.models.mae import MAEPrior

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[PIL.Image.Image | np.ndarray]
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def image_to_tensor(image: ImageInput) -> torch.Tensor:
    """PIL RGB / ``uint8 [H, W, 3]`` / float ``[H, W, 3]`` in [0, 1] / torch ``[B, 3, H, W]`` in [0, 1] (or lists of
    the first three) → float32 ``[B, 3, H, W]`` in [0, 1]. Alpha channels are refused (convert explicitly)."""
    if isinstance(image, torch.Tensor):
        tensor = image[None] if image.ndim == 3 else image
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"image tensor must be [B, 3, H, W], got {tuple(image.shape)}")
        return tensor.float()
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    arrays = []
    for item in items:
        if isinstance(item, PIL.Image.Image):
            if item.mode in ("RGBA", "LA", "PA") or "transparency" in item.info:
                raise ValueError(f"image has an alpha channel (mode {item.mode}); convert it to RGB explicitly first")
            item = np.asarray(item.convert("RGB"))
        item = np.asarray(item)
        if item.ndim == 4:
            arrays.extend(list(item))
            continue
        if item.ndim != 3 or item.shape[-1] != 3:
            raise ValueError(f"image array must be [H, W, 3] RGB, got shape {item.shape}")
        arrays.append(item)
    batch = np.stack(arrays)
    if batch.dtype == np.uint8:
        batch = batch.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).permute(0, 3, 1, 2)


def mask_to_tensor(mask: ImageInput) -> torch.Tensor:
    """PIL L/1 / bool, uint8 (>= 128 = hole) or float (>= 0.5 = hole) arrays ``[H, W]`` / torch ``[B, 1, H, W]``
    (or lists) → float32 ``[B, 1, H, W]`` in {0, 1}, 1 = hole."""
    from misato.io import binarize_mask

    if isinstance(mask, torch.Tensor):
        tensor = mask.reshape(1, 1, *mask.shape) if mask.ndim == 2 else mask
        tensor = tensor[:, None] if tensor.ndim == 3 else tensor
        if tensor.ndim != 4 or tensor.shape[1] != 1:
            raise ValueError(f"mask tensor must be [B, 1, H, W], got {tuple(mask.shape)}")
        # the one binariser, so uint8 and float tensors follow the same rule as arrays (uint8 >= 128, float >= 0.5)
        return torch.from_numpy(binarize_mask(tensor.detach().cpu().numpy())).to(tensor.device).float()
    items = list(mask) if isinstance(mask, (list, tuple)) else [mask]
    arrays = []
    for item in items:
        if isinstance(item, PIL.Image.Image):
            if item.mode not in ("L", "1"):
                raise ValueError(f"mask image must be single-channel (mode L or 1), got mode {item.mode}")
            item = np.asarray(item.convert("L"))
        item = np.asarray(item)
        if item.ndim == 3 and item.shape[-1] in (3, 4):
            raise ValueError(f"mask must be single-channel [H, W] (or a batch [B, H, W]), got shape {item.shape}")
        if item.ndim == 3 and item.shape[-1] != 1:
            arrays.extend(list(item))
            continue
        arrays.append(item.reshape(item.shape[:2]))
    return torch.from_numpy(np.stack([binarize_mask(a) for a in arrays]).astype(np.float32))[:, None]


def official_mae_inputs(image: torch.Tensor, mask: torch.Tensor, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAE input as the ASUKA-FLUX release prepares it (``datas/misato_dataset.py``): ``image [B, 3, H, W]``
    in [0, 1] → uint8 (rounded) → cv2 ``INTER_AREA`` to ``size × size`` → /255; ``mask [B, 1, H, W]`` → cv2
    ``INTER_NEAREST`` → hole = value ≥ 0.5. Returns ``[B, 3, size, size]`` in [0, 1] and ``[B, 1, size, size]``
    in {0, 1}, on the inputs' devices; fed to :class:`~asuka.models.MAEPrior`, whose own resize is then the
    identity."""
    import cv2

    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    holes = mask.detach().float().cpu().numpy()[:, 0]
    resized = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])
    resized_holes = np.stack([cv2.resize(h, (size, size), interpolation=cv2.INTER_NEAREST) for h in holes]) >= 0.5
    return (torch.from_numpy(resized.astype(np.float32) / 255).permute(0, 3, 1, 2).to(image.device),
            torch.from_numpy(resized_holes.astype(np.float32))[:, None].to(mask.device))


MAE_PREPROCESSING = ("official", "area")
"""How the MAE input is brought to the MAE's size: ``official`` (:func:`official_mae_inputs`, as the ASUKA release)
or ``area`` (left to :class:`~asuka.models.MAEPrior`: torch area resize on floats, token hole if any pixel is)."""


def mae_inputs(mae: MAEPrior, image: torch.Tensor, mask: torch.Tensor,
               mae_preprocessing: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``image [B, 3, H, W]`` in [0, 1] and ``mask [B, 1, H, W]`` prepared for ``mae`` per ``mae_preprocessing``,
    in the MAE's device and dtype (shared by the SD and FLUX pipelines)."""
    if mae_preprocessing == "official":
        image, mask = official_mae_inputs(image, mask, mae.config.image_size)
    return image.to(mae.device, mae.dtype), mask.to(mae.device, mae.dtype)


def check_image_batch(image: torch.Tensor, mask: torch.Tensor, multiple: int, adapters: str) -> None:
    """Raise ``ValueError`` unless ``image [B, 3, H, W]`` in [0, 1] and ``mask [B, 1, H, W]`` agree in batch and
    size and the sides are multiples of ``multiple`` (``adapters`` names the runner adapters that pad for the user)."""
    if image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image is {image.shape[-1]}x{image.shape[-2]} but mask_image is "
                         f"{mask.shape[-1]}x{mask.shape[-2]}")
    if image.shape[0] != mask.shape[0]:
        raise ValueError(f"{image.shape[0]} images but {mask.shape[0]} masks")
    height, width = image.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"image size {width}x{height} is not a multiple of {multiple}; pad or resize it first "
                         f"(the {adapters} runner adapters pad by reflection and crop back)")
    if float(image.min()) < 0 or float(image.max()) > 1:
        raise ValueError("image values must lie in [0, 1] (uint8 arrays and PIL images are scaled automatically)")


def check_sampling(num_inference_steps: int, output_type: str, mae_preprocessing: str) -> None:
    """Raise ``ValueError`` for a step count, output type or MAE preprocessing the pipelines do not know."""
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if mae_preprocessing not in MAE_PREPROCESSING:
        raise ValueError(f"mae_preprocessing must be one of {MAE_PREPROCESSING}, got {mae_preprocessing!r}")


def run_inpainting_decoder(
    decoder: InpaintingDecoder, unscaled: torch.Tensor, image: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``decoder(unscaled latents, image [B, 3, H, W] in [−1, 1], mask [B, 1, H, W])`` in the decoder's dtype
    (shared by the SD and FLUX pipelines).

    Channels-last convolutions run the full-resolution condition encoder and decoder ~1.4x faster on CPU (same
    math, float rounding only); the module is switched back so saved weights keep the standard layout.
    """
    channels_last = torch.channels_last
    decoder.to(memory_format=channels_last)
    try:
        return decoder(
            unscaled.to(decoder.dtype).contiguous(memory_format=channels_last),
            image.to(decoder.dtype).contiguous(memory_format=channels_last),
            mask.to(decoder.dtype).contiguous(memory_format=channels_last),
        ).contiguous()
    finally:
        decoder.to(memory_format=torch.contiguous_format)


class ASUKAInpaintPipeline(DiffusionPipeline):
    """ASUKA inpainting (see the module docstring for the flow).

    Components: ``vae`` (``AutoencoderKL``), ``unet`` (9-input-channel SD inpainting UNet), ``scheduler``,
    ``mae`` (:class:`~asuka.models.MAEPrior`), ``alignment`` (:class:`~asuka.models.PriorAlignment`) and
    ``decoder`` (:class:`~asuka.models.InpaintingDecoder`). ``mae``/``alignment`` may be None when every call
    passes ``prompt_embeds``; ``decoder`` None means the plain KL-VAE decoder.
    """

    model_cpu_offload_seq = "mae->alignment->unet->decoder->vae"
    _optional_components = ["mae", "alignment", "decoder"]

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        mae: MAEPrior | None = None,
        alignment: PriorAlignment | None = None,
        decoder: InpaintingDecoder | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, mae=mae, alignment=alignment, decoder=decoder)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_sd_inpaint(
        cls,
        sd_dir: str | os.PathLike,
        mae: MAEPrior | None = None,
        alignment: PriorAlignment | None = None,
        decoder: InpaintingDecoder | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> "ASUKAInpaintPipeline":
        """Take ``vae``, ``unet`` and ``scheduler`` from any diffusers SD-inpainting folder (offline, strictly:
        :func:`asuka.convert.load_pretrained_strict`).

        Raises:
            MisatoError: naming the part's folder or config file: a config that is not a JSON object, a scheduler
            class diffusers lacks, weights of another network or shape.
        """
        scheduler = load_scheduler(os.path.join(sd_dir, "scheduler", "scheduler_config.json"))
        vae = load_pretrained_strict(AutoencoderKL, os.path.join(sd_dir, "vae"), torch_dtype)
        unet = load_pretrained_strict(UNet2DConditionModel, os.path.join(sd_dir, "unet"), torch_dtype)
        return cls(vae=vae, unet=unet, scheduler=scheduler, mae=mae, alignment=alignment, decoder=decoder)

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        num_inference_steps: int,
        strength: float,
        output_type: str,
        prompt_embeds: torch.Tensor | None,
        guidance_scale: float,
        negative_prompt_embeds: torch.Tensor | None,
        mae_preprocessing: str = "official",
    ) -> None:
        """Raise ``ValueError`` for inputs the pipeline cannot process (tensors already converted)."""
        check_image_batch(image, mask, self.vae_scale_factor, "`asuka`/`sd`")
        check_sampling(num_inference_steps, output_type, mae_preprocessing)
        if not 0 < strength <= 1:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        if prompt_embeds is None and (self.mae is None or self.alignment is None):
            raise ValueError("this pipeline has no `mae`/`alignment`; pass `prompt_embeds` (SD baselines)")
        if self.unet.config.in_channels != 9:
            raise ValueError(f"the UNet has {self.unet.config.in_channels} input channels; an SD inpainting UNet has 9")
        if guidance_scale > 1 and negative_prompt_embeds is None:
            raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (the unconditional condition)")

    # ------------------------------------------------------------------ stages

    def encode_prior(self, image: torch.Tensor, mask: torch.Tensor, mae_preprocessing: str = "official") -> torch.Tensor:
        """ASUKA's condition: ``image [B, 3, H, W]`` in [0, 1], ``mask [B, 1, H, W]`` → ``[B, L, cross_attention_dim]``
        (the MAE input prepared by :func:`mae_inputs`)."""
        prior = self.mae(*mae_inputs(self.mae, image, mask, mae_preprocessing))
        return self.alignment(prior.to(self.alignment.dtype))

    def _encode_vae(self, pixels: torch.Tensor, generator: torch.Generator | list | None) -> torch.Tensor:
        """``pixels [B, 3, H, W]`` in [−1, 1] → scaled latents sampled from the posterior (as diffusers does)."""
        if isinstance(generator, list):
            latents = torch.cat(
                [self.vae.encode(p[None]).latent_dist.sample(g) for p, g in zip(pixels, generator)]
            )
        else:
            latents = self.vae.encode(pixels).latent_dist.sample(generator)
        return latents * self.vae.config.scaling_factor

    def prepare_mask_latents(
        self, pixels: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The UNet's extra inputs: ``pixels [B, 3, H, W]`` in [−1, 1] and ``mask [B, 1, H, W]`` (1 = hole) →
        mask at latent size (nearest) ``[B, 1, H/8, W/8]`` and scaled masked-image latents ``[B, 4, H/8, W/8]``
        (sampled from the posterior with ``generator``). Also what training feeds the frozen UNet."""
        dtype = self.unet.dtype
        latent_size = (pixels.shape[-2] // self.vae_scale_factor, pixels.shape[-1] // self.vae_scale_factor)
        latent_mask = F.interpolate(mask, size=latent_size).to(dtype)
        masked_latents = self._encode_vae((pixels * (mask < 0.5)).to(self.vae.dtype), generator).to(dtype)
        return latent_mask, masked_latents

    def _timesteps(self, num_inference_steps: int, strength: float, device: torch.device) -> torch.Tensor:
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        start = max(num_inference_steps - init_timestep, 0)
        timesteps = self.scheduler.timesteps[start * self.scheduler.order :]
        if len(timesteps) == 0:
            raise ValueError(f"strength {strength} with {num_inference_steps} steps leaves no denoising step")
        return timesteps

    def _step_kwargs(self, generator: Any, eta: float) -> dict[str, Any]:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def decode_latents(self, latents: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled latents → ``[B, 3, H, W]`` in [−1, 1] via the inpainting decoder (or the KL-VAE decoder)."""
        unscaled = latents / self.vae.config.scaling_factor
        if self.decoder is None:
            return self.vae.decode(unscaled).sample
        return run_inpainting_decoder(self.decoder, unscaled, image, mask)

    # ------------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        strength: float = 1.0,
        output_type: str = "pil",
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        condition_weight: float = 1.0,
        paste_back: bool = True,
        eta: float = 0.0,
        mae_preprocessing: str = "official",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Inpaint.

        Args:
            image: RGB images (PIL, ``uint8 [H, W, 3]``, float arrays/tensors in [0, 1]); H and W multiples of 8.
            mask_image: masks of the same size, **1/white = hole** (repainted), 0 = keep.
            num_inference_steps: scheduler steps (ASUKA: 50).
            generator: ``torch.Generator`` (use a CPU generator for machine-independent noise) or one per image.
            strength: 1 starts from pure noise; < 1 starts from the noised image latent (diffusers semantics).
            output_type: ``"pil"``, ``"np"`` (float ``[B, H, W, 3]`` in [0, 1]), ``"pt"`` (``[B, 3, H, W]``) or
                ``"latent"``.
            prompt_embeds: ``[B or 1, L, cross_attention_dim]`` condition used instead of the MAE prior.
            negative_prompt_embeds: unconditional condition for classifier-free guidance.
            guidance_scale: > 1 enables classifier-free guidance (off by default, as in the paper).
            condition_weight: scales the condition towards zero, ``c ← w·c`` (the FLUX release's
                ``none + w·(feat − none)`` with a zero "none"; 1 = unchanged).
            paste_back: replace known pixels of the output by the input (exact in the known region).
            eta: DDIM eta.
            mae_preprocessing: ``"official"`` (the ASUKA release's cv2 resizing of the MAE input, default) or
                ``"area"`` (:data:`MAE_PREPROCESSING`).
            return_dict: return an ``ImagePipelineOutput`` rather than a tuple.

        Samples whose mask has no hole are returned unchanged (bit-exact input); a full-image hole is valid.
        """
        device = self._execution_device
        pixels01 = image_to_tensor(image)
        mask = mask_to_tensor(mask_image)
        self.check_inputs(pixels01, mask, num_inference_steps, strength, output_type, prompt_embeds,
                          guidance_scale, negative_prompt_embeds, mae_preprocessing)
        batch = pixels01.shape[0]
        dtype = self.unet.dtype
        pixels01, mask = pixels01.to(device), mask.to(device)
        pixels = (pixels01 * 2 - 1).to(dtype)
        has_hole = mask.flatten(1).amax(dim=1) > 0

        if output_type != "latent" and not bool(has_hole.any()):
            return self._output(pixels01, output_type, return_dict)

        if prompt_embeds is None:
            condition = self.encode_prior(pixels01, mask, mae_preprocessing)
        else:
            condition = prompt_embeds.to(device)
            if condition.shape[0] == 1 and batch > 1:
                condition = condition.expand(batch, -1, -1)
        condition = (condition * condition_weight).to(dtype)
        use_guidance = guidance_scale > 1
        if use_guidance:
            negative = negative_prompt_embeds.to(device, dtype).expand(batch, -1, -1)
            condition = torch.cat([negative, condition])

        timesteps = self._timesteps(num_inference_steps, strength, device)
        height, width = pixels.shape[-2:]
        latent_shape = (batch, self.vae.config.latent_channels, height // self.vae_scale_factor,
                        width // self.vae_scale_factor)
        full_strength = strength == 1.0
        image_latents = None if full_strength else self._encode_vae(pixels, generator)
        noise = randn_tensor(latent_shape, generator=generator, device=device, dtype=dtype)
        if full_strength:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))

        latent_mask, masked_latents = self.prepare_mask_latents(pixels, mask, generator)
        if use_guidance:
            latent_mask = torch.cat([latent_mask] * 2)
            masked_latents = torch.cat([masked_latents] * 2)

        step_kwargs = self._step_kwargs(generator, eta)
        with self.progress_bar(total=len(timesteps)) as bar:
            for t in timesteps:
                model_input = torch.cat([latents] * 2) if use_guidance else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                model_input = torch.cat([model_input, latent_mask, masked_latents], dim=1)
                noise_pred = self.unet(model_input, t, encoder_hidden_states=condition, return_dict=False)[0]
                if use_guidance:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                bar.update()

        if output_type == "latent":
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=latents) if return_dict else (latents,)

        decoded = self.decode_latents(latents, pixels, mask)
        result = self._compose(decoded, pixels01, mask, has_hole, paste_back)
        self.maybe_free_model_hooks()
        return self._output(result, output_type, return_dict)

    @staticmethod
    def _compose(decoded: torch.Tensor, pixels01: torch.Tensor, mask: torch.Tensor, has_hole: torch.Tensor,
                 paste_back: bool) -> torch.Tensor:
        """Decoded ``[B, 3, H, W]`` in [−1, 1] → [0, 1], known pixels pasted back (``paste_back``), samples
        without hole (``has_hole [B]`` False) replaced by their input ``pixels01``."""
        result = (decoded.float() / 2 + 0.5).clamp(0, 1)
        if paste_back:
            result = result * mask + pixels01 * (1 - mask)
        return torch.where(has_hole[:, None, None, None], result, pixels01)

    @staticmethod
    def _output(images01: torch.Tensor, output_type: str, return_dict: bool):
        """``[B, 3, H, W]`` in [0, 1] → the requested output type."""
        if output_type == "pt":
            images: Any = images01
        else:
            array = images01.permute(0, 2, 3, 1).cpu().float().numpy()
            images = array if output_type == "np" else [
                PIL.Image.fromarray(np.rint(a * 255).astype(np.uint8)) for a in array
            ]
        return ImagePipelineOutput(images=images) if return_dict else (images,)
