"""Stage ``decoder``: train the inpainting decoder (:class:`~asuka.models.InpaintingDecoder`) behind the frozen SD
VAE encoder (paper Sec. 3.3 and Table 4).

Per sample (image ``x`` in [−1, 1], hole mask ``m`` from ``--mask-preset``, the ``asuka-train`` mixture):

1. colour augmentation (``--augment colour`` or ``colour+latent``): the image *given to the encoder* is colour
   jittered (``--color-jitter``, the paper's ColorJitter 0.15 / 0.2 / 0.1 / 0.03); the masked image the decoder is
   conditioned on and the target stay ``x``. The decoder learns to take colour from the known region, not from a
   latent whose colours drifted;
2. ``z`` is a sample of the frozen encoder's posterior (``mean + std · ε``, as Asymmetric VQGAN trains);
3. latent augmentation (``--augment colour+latent``): with probability ``--latent-aug-p`` (0.5), ``z`` is replaced
   by the frozen SD-inpainting UNet's one-step estimate of the clean latent from a noised ``z``, conditioned on
   ``z`` itself and an all-zero mask (eq. 1; :func:`asuka.train.augment.latent_augment`, timesteps
   ``--latent-timesteps``, default the whole schedule — the paper does not give them);
4. ``x̂ = decoder(z, x, m)`` and the loss of :mod:`asuka.train.decoder_losses`: L1 + LPIPS, plus from
   ``--disc-start`` the hinge PatchGAN with weight ``--disc-weight`` (0.8) × the adaptive weight. There is no KL
   term: it depends only on the frozen encoder (see that module).

Two optimisers (phases): ``decoder`` (every step) and ``discriminator`` (from ``--disc-start``). The discriminator
phase reuses the reconstructions of the decoder phase of the same step and micro-batch (detached, made by the
decoder before its update), instead of running encoder, UNet and decoder a second time.

Initialisation (``--init``): ``vae`` — the SD VAE's decoder (``InpaintingDecoder.from_vae``, fresh condition
encoder); an Asymmetric-VQGAN checkpoint (Lightning file in latent-diffusion naming, or a diffusers
``AsymmetricAutoencoderKL`` folder; see :mod:`asuka.convert`) — the paper's choice; or an ``InpaintingDecoder``
folder (``save_pretrained``, or an earlier output of this stage). An Asymmetric-VQGAN decoder conditions on the
masked image only: for ``--decoder-variant asuka`` its condition encoder gets a fourth input channel (the mask)
with zero weights, so the first step starts from exactly the Asymmetric-VQGAN features. ``post_quant_conv`` stays
frozen, as in Asymmetric VQGAN; ``--pretrained-lr-scale`` scales the learning rate of the pretrained decoder
layers relative to the new condition encoder (Asymmetric VQGAN uses 0.1; the paper gives one learning rate).

Defaults are the paper's: AdamW lr 8e-5 with cosine decay, 50K steps, batch 40. Adam betas (0.5, 0.9) are latent
diffusion's / Asymmetric VQGAN's for their GAN-trained autoencoders (the paper does not give them).
Output: ``OUT/decoder/`` (``InpaintingDecoder.save_pretrained``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from asuka.models.decoder import InpaintingDecoder
from asuka.train.augment import ColorJitter, check_timestep_range, latent_augment
from asuka.train.config import non_negative_float, non_negative_int, positive_int, probability
from asuka.train.data import per_sample_randn, sample_generators
from asuka.train.decoder_losses import DecoderLoss, DecoderLossConfig
from asuka.train.diffusion import frozen_in_precision
from asuka.train.loop import Optimiser, Stage, adamw, lr_scheduler_for, main_for
from misato.errors import MisatoError

AUGMENTATIONS = ("none", "colour", "colour+latent")
"""Table 4's decoder rows: no augmentation, colour only ("color-aug"), colour + latent ("Ours")."""
FROM_VAE = "vae"
COLOUR_SALT, POSTERIOR_SALT, LATENT_SALT = 21, 22, 23


def _widen_condition_input(decoder: InpaintingDecoder) -> InpaintingDecoder:
    """An Asymmetric-VQGAN decoder (masked image only) as an ASUKA decoder (masked image ⊕ mask): the same weights,
    the condition encoder's first convolution with a zero-weighted mask channel appended."""
    widened = InpaintingDecoder.from_config({**decoder.config, "asymmetric_vqgan": False})
    state = decoder.state_dict()
    first = state["condition_encoder.layers.0.weight"]
    state["condition_encoder.layers.0.weight"] = torch.cat([first, first.new_zeros(first.shape[0], 1,
                                                                                   *first.shape[2:])], dim=1)
    widened.load_state_dict(state)
    return widened


def load_initial_decoder(source: str, vae, variant: str) -> InpaintingDecoder:
    """The decoder ``--init`` names, as ``--decoder-variant`` (``asuka`` or ``asymmetric-vqgan``)."""
    from asuka.assemble import component_folder
    from asuka.convert import load_decoder_checkpoint

    asymmetric = variant == "asymmetric-vqgan"
    if source == FROM_VAE:
        return InpaintingDecoder.from_vae(vae, asymmetric_vqgan=asymmetric)
    path = Path(source).expanduser()
    if not path.exists():
        raise MisatoError(f"--init {source}: no such file or folder (or use {FROM_VAE})")
    decoder = load_decoder_checkpoint(component_folder(path, "decoder", "--init") or path, vae=vae)
    if decoder.config.latent_channels != vae.config.latent_channels:
        raise MisatoError(f"--init {source}: decodes {decoder.config.latent_channels}-channel latents but the SD VAE "
                          f"has {vae.config.latent_channels}")
    if decoder.config.asymmetric_vqgan and not asymmetric:
        return _widen_condition_input(decoder)
    if asymmetric and not decoder.config.asymmetric_vqgan:
        raise MisatoError(f"--init {source}: an ASUKA decoder (masked image + mask) cannot become "
                          "--decoder-variant asymmetric-vqgan")
    return decoder


class DecoderStage(Stage):
    """Train the inpainting decoder behind the frozen SD VAE encoder (L1 + LPIPS + PatchGAN, Table-4 augmentation)."""

    name = "decoder"
    component = "decoder"
    outputs = ("decoder",)
    defaults = {"lr": 8e-5, "lr_schedule": "cosine", "max_steps": 50000, "batch_size": 40, "adam_betas": [0.5, 0.9]}

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--sd", help="diffusers SD-inpainting folder: vae/ (frozen encoder; decoder init), unet/ "
                            "and scheduler/ (latent augmentation)")
        parser.add_argument("--init", default=FROM_VAE, help="vae (the SD VAE decoder), an Asymmetric-VQGAN checkpoint "
                            "or AsymmetricAutoencoderKL folder, or an InpaintingDecoder folder / earlier output")
        parser.add_argument("--decoder-variant", choices=("asuka", "asymmetric-vqgan"), default="asuka",
                            help="condition on masked image + mask (asuka) or on the masked image only")
        parser.add_argument("--augment", choices=AUGMENTATIONS, default="colour+latent",
                            help="Table 4: none, colour (color-aug), colour+latent (ASUKA)")
        parser.add_argument("--color-jitter", type=non_negative_float, nargs=4, default=[0.15, 0.2, 0.1, 0.03],
                            metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"), help="ColorJitter strengths")
        parser.add_argument("--latent-aug-p", type=probability, default=0.5,
                            help="probability of replacing a latent by the UNet's one-step estimate")
        parser.add_argument("--latent-timesteps", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                            help="inclusive timestep range of latent augmentation (default: the whole schedule)")
        parser.add_argument("--pretrained-lr-scale", type=non_negative_float, default=1.0,
                            help="learning-rate factor of the pretrained decoder layers (the condition encoder gets "
                            "--lr; Asymmetric VQGAN: 0.1)")
        parser.add_argument("--perceptual-weight", type=non_negative_float, default=1.0, help="LPIPS weight (0 = off)")
        parser.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg",
                            help="LPIPS trunk (latent diffusion trains with vgg)")
        parser.add_argument("--lpips-backbone", default=None, help="explicit LPIPS trunk file (torchvision format)")
        parser.add_argument("--lpips-linear", default=None, help="explicit LPIPS linear-layer file")
        parser.add_argument("--weights-dir", default=None, help="folder searched for the LPIPS weights first")
        parser.add_argument("--disc-weight", type=non_negative_float, default=0.8,
                            help="factor of the adaptive GAN weight (0 = no discriminator)")
        parser.add_argument("--disc-start", type=non_negative_int, default=0,
                            help="first step with the discriminator (Asymmetric VQGAN from scratch: 50001)")
        parser.add_argument("--disc-layers", type=positive_int, default=3, help="PatchGAN stride-2 layers")
        parser.add_argument("--disc-channels", type=positive_int, default=64, help="PatchGAN base width")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        import diffusers

        if config["sd"] is None:
            raise MisatoError("--sd is required: a diffusers SD-inpainting folder (vae/, unet/, scheduler/)")
        sd = Path(config["sd"]).expanduser()
        self.latent = config["augment"] == "colour+latent"
        needed = ("vae", "unet", "scheduler") if self.latent else ("vae",)
        missing = [name + "/" for name in needed if not (sd / name).is_dir()]
        if missing:
            raise MisatoError(f"--sd {sd}: not a diffusers SD-inpainting folder (missing {', '.join(missing)})")
        if self.latent:
            from asuka.assemble import load_sd_inpaint

            pipe = load_sd_inpaint(sd)
            vae = pipe.vae
            self.scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
            if config["latent_timesteps"] is not None:
                check_timestep_range(config["latent_timesteps"], self.scheduler.config.num_train_timesteps)
            self.frozen["unet"] = frozen_in_precision(pipe.unet, config["mixed_precision"])
            self.sources["sd_unet"] = str(sd / "unet")
        else:
            from asuka.assemble import loading_from
            from asuka.convert import load_pretrained_strict

            with loading_from("--sd"):
                vae = load_pretrained_strict(diffusers.AutoencoderKL, sd / "vae")
        self.sources["sd_vae"] = str(sd / "vae")
        self.scaling_factor = vae.config.scaling_factor
        decoder = load_initial_decoder(config["init"], vae, config["decoder_variant"])
        if config["init"] != FROM_VAE:
            self.sources["init"] = config["init"]
        if decoder.post_quant_conv is not None:
            decoder.post_quant_conv.requires_grad_(False)
        self.jitter = ColorJitter(*config["color_jitter"]) if config["augment"] != "none" else None
        self.frozen["vae"] = frozen_in_precision(vae, config["mixed_precision"])
        self.loss = DecoderLoss(
            DecoderLossConfig(perceptual_weight=config["perceptual_weight"], disc_weight=config["disc_weight"],
                              disc_start=config["disc_start"], lpips_net=config["lpips_net"],
                              disc_layers=config["disc_layers"], disc_channels=config["disc_channels"]),
            lpips_backbone=config["lpips_backbone"], lpips_linear=config["lpips_linear"],
            lpips_weights_dir=config["weights_dir"])
        self.frozen["lpips"] = self.loss
        self.trainable = {"decoder": decoder, "discriminator": self.loss.make_discriminator()}
        self._fakes: dict[tuple[int, ...], torch.Tensor] = {}

    def optimisers(self) -> list[Optimiser]:
        decoder = self.trainable["decoder"]
        condition = list(decoder.condition_encoder.parameters())
        new = {id(p) for p in condition}
        pretrained = [p for p in decoder.parameters() if p.requires_grad and id(p) not in new]
        groups = [{"params": pretrained, "lr": self.config["lr"] * self.config["pretrained_lr_scale"]},
                  {"params": condition, "lr": self.config["lr"]}]
        decoder_optimizer = adamw(groups, self.config)
        disc_optimizer = adamw(self.trainable["discriminator"].parameters(), self.config)
        return [Optimiser("decoder", ("decoder",), decoder_optimizer, lr_scheduler_for(decoder_optimizer, self.config)),
                Optimiser("discriminator", ("discriminator",), disc_optimizer,
                          lr_scheduler_for(disc_optimizer, self.config))]

    def phases(self, step: int) -> list[str]:
        return ["decoder", "discriminator"] if self.loss.adversarial(step) else ["decoder"]

    def decoder_inputs(self, batch: dict[str, Any], augment: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        """Unscaled latents ``[B, 4, S/8, S/8]`` for the decoder and what was done (``latent_aug`` share).

        ``augment=False``: the posterior mean of the un-jittered image (validation)."""
        image = batch["image"].float()
        seeds = batch["seed"]
        info: dict[str, Any] = {}
        with torch.no_grad():
            if augment and self.jitter is not None:
                image = self.jitter(image, sample_generators(seeds, COLOUR_SALT))
            vae = self.frozen["vae"]
            posterior = vae.encode((image * 2 - 1).to(vae.dtype)).latent_dist
            if not augment:
                return posterior.mean, info
            noise = per_sample_randn(seeds, POSTERIOR_SALT, tuple(posterior.mean.shape[1:]),
                                     device=posterior.mean.device, dtype=posterior.mean.dtype)
            latents = posterior.mean + posterior.std * noise
            if self.latent:
                result = latent_augment(latents * self.scaling_factor, self.frozen["unet"], self.scheduler,
                                        sample_generators(seeds, LATENT_SALT), self.config["latent_aug_p"],
                                        self.config["latent_timesteps"])
                latents = result.latents / self.scaling_factor
                info["latent_aug"] = result.applied.float().mean()
        return latents, info

    def training_step(self, batch: dict[str, Any], step: int, phase: str) -> dict[str, torch.Tensor]:
        key = tuple(batch["position"].tolist())
        target = batch["image"].float() * 2 - 1
        if phase == "discriminator":
            fake = self._fakes.pop(key)
            loss, parts = DecoderLoss.discriminator_loss(target, fake, self.trainable["discriminator"])
            return {"loss": loss, **parts}
        latents, info = self.decoder_inputs(batch)
        reconstruction = self.trainable["decoder"](latents, target, batch["mask"])
        last_layer = self.unwrapped("decoder").decoder.conv_out.weight
        loss, parts = self.loss.generator_loss(target, reconstruction, last_layer, step,
                                               self.unwrapped("discriminator"))
        if self.loss.adversarial(step):
            self._fakes[key] = reconstruction.detach()
        return {"loss": loss, **parts, **info}

    def validation_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The decoder's output from the posterior mean of the clean image (no augmentation), in [0, 1]."""
        latents, _ = self.decoder_inputs(batch, augment=False)
        output = self.trainable["decoder"](latents, batch["image"].float() * 2 - 1, batch["mask"])
        return ((output.float() + 1) / 2).clamp(0, 1)

    def save_output(self, out: Path) -> dict[str, Any]:
        self.unwrapped("decoder").save_pretrained(out / "decoder", safe_serialization=True)
        return {"decoder": "decoder"}


def main(argv: list[str] | None = None) -> int:
    """``python -m asuka.train.decoder``."""
    return main_for(DecoderStage, argv)


if __name__ == "__main__":
    raise SystemExit(main())
