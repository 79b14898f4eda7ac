"""What the ``alignment`` and ``sd-prompt`` stages share: the frozen SD-inpainting UNet and VAE and the standard
diffusion loss, with the condition (``encoder_hidden_states``) left to the subclass.

One step, for ``image [B, 3, S, S]`` in [0, 1] and ``mask [B, 1, S, S]`` (1 = hole): the VAE encodes the image and
the masked image ``image · (1 − mask)`` (posterior samples drawn per sample, × scaling factor); the mask is
resized to the latent grid (nearest), as :meth:`asuka.pipeline.ASUKAInpaintPipeline.prepare_mask_latents` does
at inference; noise ε and a timestep ``t`` uniform in ``[0, num_train_timesteps)`` are drawn per sample; the UNet
sees ``[noisy latent, mask, masked latent]`` (9 channels) and the condition; the loss is the MSE against ε, or
against the velocity when the scheduler's ``prediction_type`` is ``v_prediction``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asuka.train.data import per_sample_randint, per_sample_randn
from asuka.train.loop import Stage
from misato.errors import MisatoError

LATENT_SALT, MASKED_LATENT_SALT, NOISE_SALT, TIMESTEP_SALT = 21, 22, 23, 24
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def frozen_in_precision(module: torch.nn.Module, mixed_precision: str) -> torch.nn.Module:
    """A frozen module cast to the run's half precision (``--mixed-precision``); untouched in float32."""
    dtype = WEIGHT_DTYPES[mixed_precision]
    return module if dtype == torch.float32 else module.to(dtype)


class DiffusionStage(Stage):
    """Base of the stages trained through the frozen SD-inpainting UNet (module docstring)."""

    defaults = {"resolution": 512, "batch_size": 64, "max_steps": 23000}

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--sd", help="diffusers SD-inpainting folder (unet/, vae/, scheduler/), frozen")
        parser.add_argument("--gradient-checkpointing", action="store_true",
                            help="recompute the frozen UNet's activations in backward (less memory, ~30 %% slower)")
        parser.add_argument("--val-inference-steps", type=int, default=20,
                            help="sampling steps of the validation grid")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        from diffusers import DDPMScheduler

        from asuka.pipeline import ASUKAInpaintPipeline

        if config["sd"] is None:
            raise MisatoError("--sd is required: a diffusers SD-inpainting folder (unet/, vae/, scheduler/)")
        sd = Path(config["sd"])
        missing = [part for part in ("unet", "vae", "scheduler") if not (sd / part).is_dir()]
        if missing:
            raise MisatoError(f"--sd {sd}: not a diffusers SD-inpainting folder (missing {', '.join(missing)}/)")
        try:
            pipe = ASUKAInpaintPipeline.from_sd_inpaint(sd)
        except (OSError, ValueError) as error:
            raise MisatoError(f"--sd {sd}: cannot load ({str(error).splitlines()[0]})") from None
        if pipe.unet.config.in_channels != 9:
            raise MisatoError(f"--sd {sd}: the UNet has {pipe.unet.config.in_channels} input channels; an SD "
                              "*inpainting* UNet has 9")
        self.pipe = pipe
        self.frozen = {"unet": frozen_in_precision(pipe.unet, config["mixed_precision"]),
                       "vae": frozen_in_precision(pipe.vae, config["mixed_precision"])}
        if config["gradient_checkpointing"]:
            pipe.unet.enable_gradient_checkpointing()
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.sources["sd_unet"], self.sources["sd_vae"] = str(sd / "unet"), str(sd / "vae")

    def condition(self, batch: dict[str, Any], step: int) -> torch.Tensor:
        """``encoder_hidden_states [B, L, cross_attention_dim]`` for the batch (through the trainable modules)."""
        raise NotImplementedError

    def _latents(self, pixels: torch.Tensor, seeds: torch.Tensor, salt: int) -> torch.Tensor:
        """Scaled posterior samples ``[B, 4, S/8, S/8]`` of ``pixels`` in [−1, 1], noise drawn per sample."""
        vae = self.frozen["vae"]
        distribution = vae.encode(pixels.to(vae.dtype)).latent_dist
        noise = per_sample_randn(seeds, salt, tuple(distribution.mean.shape[1:]), device=pixels.device,
                                 dtype=distribution.mean.dtype)
        return (distribution.mean + distribution.std * noise) * vae.config.scaling_factor

    def training_step(self, batch: dict[str, Any], step: int, phase: str) -> dict[str, torch.Tensor]:
        unet, seeds = self.frozen["unet"], batch["seed"]
        pixels = batch["image"] * 2 - 1
        mask = batch["mask"]
        with torch.no_grad():
            latents = self._latents(pixels, seeds, LATENT_SALT)
            masked_latents = self._latents(pixels * (mask < 0.5), seeds, MASKED_LATENT_SALT)
            latent_mask = F.interpolate(mask, size=latents.shape[-2:])
            noise = per_sample_randn(seeds, NOISE_SALT, tuple(latents.shape[1:]), device=latents.device,
                                     dtype=latents.dtype)
            timesteps = per_sample_randint(seeds, TIMESTEP_SALT, self.noise_scheduler.config.num_train_timesteps,
                                           device=latents.device)
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
            elif self.noise_scheduler.config.prediction_type == "epsilon":
                target = noise
            else:
                raise MisatoError(f"--sd: scheduler prediction_type {self.noise_scheduler.config.prediction_type!r} "
                                  "is not supported (epsilon or v_prediction)")
        condition = self.condition(batch, step)
        model_input = torch.cat([noisy, latent_mask.to(noisy.dtype), masked_latents], dim=1).to(unet.dtype)
        prediction = unet(model_input, timesteps, encoder_hidden_states=condition.to(unet.dtype),
                          return_dict=False)[0]
        return {"loss": F.mse_loss(prediction.float(), target.float())}

    def sample(self, batch: dict[str, Any], **call: Any) -> torch.Tensor:
        """Inpaint the batch with the pipeline (DDIM-like sampling from the SD folder's scheduler) →
        ``[B, 3, S, S]`` in [0, 1]; ``call`` goes to :class:`~asuka.pipeline.ASUKAInpaintPipeline`."""
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator(self.device).manual_seed(self.config["seed"])
        return self.pipe(batch["image"], batch["mask"], num_inference_steps=self.config["val_inference_steps"],
                         generator=generator, output_type="pt", **call).images
