"""Stage ``alignment``: train :class:`~asuka.models.PriorAlignment` between a frozen MAE and a frozen SD-inpainting
UNet (and VAE) with the standard diffusion loss (:mod:`asuka.train.diffusion`).

Paper values are the defaults: AdamW, lr 5e-2 (as printed), 23K steps, batch 64 (global: ``--batch-size`` ×
processes × ``--grad-accum``), 512 px. With probability ``p(step)`` a sample's prior is computed from the full
(unmasked) image instead of the masked one; ``p`` rises linearly from 0 to ``--full-prior-peak`` over
``--full-prior-warmup`` steps, falls linearly to ``--full-prior-final`` at ``--full-prior-steps`` (2K in the paper)
and stays there. The paper gives neither the warm-up length nor the peak: the defaults (200 steps, 0.5, final 0)
are choices, see docs/training.md. Variants of paper Table 3 by ``--variant`` (``linear``, ``attn``, ``cross4``,
``asuka``). Output: ``OUT/alignment/`` (``save_pretrained``), which ``misato asuka assemble --alignment OUT`` takes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from asuka.models.alignment import ALIGNMENT_VARIANTS, PriorAlignment, default_num_heads
from asuka.pipeline import MAE_PREPROCESSING, mae_inputs
from asuka.train.config import non_negative_int, probability
from asuka.train.data import per_sample_rand
from asuka.train.diffusion import DiffusionStage, frozen_in_precision
from asuka.train.loop import Optimiser, adamw, lr_scheduler_for, main_for
from asuka.train.mae import load_mae
from misato.errors import MisatoError

FULL_PRIOR_SALT = 31


def full_prior_probability(step: int, peak: float, warmup: int, until: int, final: float) -> float:
    """``p(step)`` (0-based step): linear 0 → ``peak`` over ``warmup`` steps, linear ``peak`` → ``final`` until
    step ``until``, then ``final``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step < until:
        return peak + (final - peak) * (step - warmup) / (until - warmup)
    return final


class AlignmentStage(DiffusionStage):
    """Train the alignment module (frozen MAE, SD-inpainting UNet and VAE; ε- or v-prediction loss)."""

    name = "alignment"
    component = "alignment"
    outputs = ("alignment",)
    defaults = {**DiffusionStage.defaults, "lr": 5e-2}

    @classmethod
    def add_arguments(cls, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--mae", help="the (fine-tuned) MAE: mae_300.pth, an MAE folder or a `train mae` output")
        parser.add_argument("--variant", choices=tuple(ALIGNMENT_VARIANTS), default="asuka",
                            help="paper Table 3: linear, attn (1 block), cross4 (queries + 4 cross-attention "
                            "blocks), asuka (4 self-attention blocks)")
        parser.add_argument("--alignment-init", default=None,
                            help="start from an alignment folder (save_pretrained / a `train alignment` output)")
        parser.add_argument("--full-prior-peak", type=probability, default=0.5,
                            help="peak probability of a prior from the full image (unknown in the paper)")
        parser.add_argument("--full-prior-warmup", type=non_negative_int, default=200,
                            help="steps of the linear rise of that probability (unknown in the paper)")
        parser.add_argument("--full-prior-steps", type=non_negative_int, default=2000,
                            help="step where the decay ends and the probability is frozen (paper: 2K)")
        parser.add_argument("--full-prior-final", type=probability, default=0.0,
                            help="the probability after --full-prior-steps")
        parser.add_argument("--mae-preprocessing", choices=MAE_PREPROCESSING, default="official",
                            help="how the MAE input is resized, as at inference (asuka.pipeline.mae_inputs): official "
                                 "(the release's cv2 route, the pipeline's default) or area")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if config["mae"] is None:
            raise MisatoError("--mae is required: mae_300.pth, an MAE folder or a `misato train mae` output")
        if config["full_prior_warmup"] > config["full_prior_steps"]:
            raise MisatoError(f"--full-prior-warmup {config['full_prior_warmup']} exceeds --full-prior-steps "
                              f"{config['full_prior_steps']}")
        mae = frozen_in_precision(load_mae(config["mae"], "--mae"), config["mixed_precision"])
        self.sources["mae"] = config["mae"]
        cross_dim = self.pipe.unet.config.cross_attention_dim
        if config["alignment_init"] is not None:
            from asuka.assemble import component_folder, loading_from
            from asuka.convert import load_pretrained_strict

            folder = component_folder(config["alignment_init"], "alignment", "--alignment-init")
            if folder is None:
                raise MisatoError(f"--alignment-init {config['alignment_init']}: give an alignment folder")
            with loading_from("--alignment-init"):
                alignment = load_pretrained_strict(PriorAlignment, folder)
            self.sources["alignment_init"] = config["alignment_init"]
        else:
            alignment = PriorAlignment.from_variant(config["variant"], prior_dim=mae.config.decoder_embed_dim,
                                                    cross_attention_dim=cross_dim,
                                                    num_heads=default_num_heads(cross_dim))
        if (alignment.config.prior_dim, alignment.config.cross_attention_dim) != (mae.config.decoder_embed_dim,
                                                                                  cross_dim):
            raise MisatoError(f"--alignment-init: maps {alignment.config.prior_dim}-d priors to "
                              f"{alignment.config.cross_attention_dim}-d; the MAE gives "
                              f"{mae.config.decoder_embed_dim}-d and the UNet takes {cross_dim}-d")
        self.frozen["mae"] = mae
        self.trainable = {"alignment": alignment}

    def optimisers(self) -> list[Optimiser]:
        optimizer = adamw(self.trainable["alignment"].parameters(), self.config)
        return [Optimiser("alignment", ("alignment",), optimizer, lr_scheduler_for(optimizer, self.config))]

    def full_prior_probability(self, step: int) -> float:
        c = self.config
        return full_prior_probability(step, c["full_prior_peak"], c["full_prior_warmup"], c["full_prior_steps"],
                                      c["full_prior_final"])

    def condition(self, batch: dict[str, Any], step: int) -> torch.Tensor:
        mae = self.frozen["mae"]
        full = per_sample_rand(batch["seed"], FULL_PRIOR_SALT, device=batch["mask"].device)
        full = full < self.full_prior_probability(step)
        prior_mask = batch["mask"] * (~full).to(batch["mask"].dtype)[:, None, None, None]
        with torch.no_grad():
            prior = mae(*mae_inputs(mae, batch["image"], prior_mask, self.config["mae_preprocessing"]))
        return self.trainable["alignment"](prior)

    def training_step(self, batch: dict[str, Any], step: int, phase: str) -> dict[str, torch.Tensor]:
        losses = super().training_step(batch, step, phase)
        return {**losses, "full_prior_p": torch.tensor(self.full_prior_probability(step))}

    def validation_images(self, batch: dict[str, Any]) -> torch.Tensor:
        self.pipe.register_modules(mae=self.frozen["mae"], alignment=self.trainable["alignment"])
        return self.sample(batch, mae_preprocessing=self.config["mae_preprocessing"])

    def save_output(self, out: Path) -> dict[str, Any]:
        self.trainable["alignment"].save_pretrained(out / "alignment", safe_serialization=True)
        return {"alignment": "alignment"}


def main(argv: list[str] | None = None) -> int:
    """``python -m asuka.train.alignment``."""
    return main_for(AlignmentStage, argv)


if __name__ == "__main__":
    raise SystemExit(main())
