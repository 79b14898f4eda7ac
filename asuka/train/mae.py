"""Stage ``mae``: fine-tune the MAE prior (:class:`~asuka.models.MAEPrior`) on inpainting masks.

Per sample: a mask from ``--mask-preset`` (the ``asuka-train`` mixture) at the MAE's input size; when fewer than
``--min-masked-ratio`` (75 %) of the tokens are masked, randomly chosen unmasked tokens are added until that
share is reached (the paper's "grown to 75 %"; a token is masked when any of its pixels is a hole, as the MAE
itself decides). Loss: MSE between the MAE's predicted patches and the image's patches over the masked tokens,
in the MAE's ImageNet-normalised pixel space; with ``--norm-pix-loss`` (MAE's default) each target patch is first
normalised by its own mean and variance. The mean is taken per sample, then over the batch (MAE pools all masked
tokens of the batch; per sample, the loss of a batch split over processes is exactly the mean of their losses).

Start from an MAE-FAR checkpoint (``--mae-init mae_300.pth``), an MAE folder written by ``save_pretrained`` or
by an earlier run of this stage, or ``scratch`` (ViT-B at ``--resolution``). Output: ``OUT/mae/``
(``MAEPrior.save_pretrained``), which ``misato asuka assemble --mae OUT`` takes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asuka.models.mae import IMAGENET_MEAN, IMAGENET_STD, MAEPrior
from asuka.train.config import probability
from asuka.train.data import per_sample_rand
from asuka.train.loop import Optimiser, Stage, adamw, lr_scheduler_for, main_for
from misato.errors import MisatoError

SCRATCH = "scratch"
GROW_SALT = 11


def load_mae(source: str, option: str) -> MAEPrior:
    """An MAEPrior from an MAE-FAR checkpoint file, a ``save_pretrained`` folder or a training output folder,
    given as ``option`` (``--mae-init``, ``--mae``; errors name it and the file)."""
    from asuka.assemble import component_folder, loading_from
    from asuka.convert import load_mae_checkpoint, load_pretrained_strict

    folder = component_folder(source, "mae", option)
    with loading_from(option):
        return load_mae_checkpoint(source) if folder is None else load_pretrained_strict(MAEPrior, folder)


def grow_token_mask(masked: torch.Tensor, ratio: float, seeds: torch.Tensor, salt: int = GROW_SALT) -> torch.Tensor:
    """``masked`` bool ``[B, L]`` → bool ``[B, L]`` with at least ``ceil(ratio · L)`` masked tokens per sample: the
    masked ones plus unmasked ones in a per-sample random order (drawn from ``seeds``)."""
    batch, length = masked.shape
    scores = per_sample_rand(seeds, salt, (length,), device=masked.device)
    scores = torch.where(masked, torch.full_like(scores, -1.0), scores)  # masked tokens rank first
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = torch.clamp(masked.sum(dim=1), min=math.ceil(ratio * length))
    return ranks < keep[:, None]


class Reconstruction(torch.nn.Module):
    """The MAE with :meth:`~asuka.models.MAEPrior.reconstruct` as its forward, so the training step goes through
    the (DDP) wrapper's ``forward``: ``(image [B, 3, S, S] in [0, 1], hole [B, 1, S, S]) → [B, 3, S, S]``."""

    def __init__(self, mae: MAEPrior) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return self.mae.reconstruct(image, hole)


class MAEStage(Stage):
    """Fine-tune the MAE prior on inpainting masks (masked-patch MSE, masks grown to 75 % of the tokens)."""

    name = "mae"
    component = "mae"
    outputs = ("mae",)
    defaults = {"resolution": 256, "batch_size": 64, "lr": 1e-4, "max_steps": 10000, "weight_decay": 0.05,
                "adam_betas": [0.9, 0.95], "lr_schedule": "cosine", "warmup_steps": 500}

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--mae-init", default=None,
                            help="MAE-FAR checkpoint (mae_300.pth), an MAE folder (save_pretrained or an earlier "
                            "`train mae` output) or scratch")
        parser.add_argument("--norm-pix-loss", action="store_true", default=True,
                            help="normalise each target patch by its mean and variance (MAE's default)")
        parser.add_argument("--no-norm-pix-loss", dest="norm_pix_loss", action="store_false",
                            help="plain normalised-pixel targets")
        parser.add_argument("--min-masked-ratio", type=probability, default=0.75,
                            help="share of tokens masked at least (masks grown with random patches)")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        source = config["mae_init"]
        if source is None:
            raise MisatoError("--mae-init is required: an MAE-FAR checkpoint (mae_300.pth), an MAE folder or scratch")
        if source == SCRATCH:
            mae = MAEPrior(image_size=config["resolution"])
        else:
            mae = load_mae(source, "--mae-init")
            self.sources["mae_init"] = source
        self.trainable = {"mae": Reconstruction(mae)}

    def optimisers(self) -> list[Optimiser]:
        optimizer = adamw(self.trainable["mae"].parameters(), self.config)
        return [Optimiser("mae", ("mae",), optimizer, lr_scheduler_for(optimizer, self.config))]

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image at the MAE size ``[B, 3, S, S]``, grown hole mask ``[B, 1, S, S]`` and grown tokens ``[B, L]``."""
        mae = self.unwrapped("mae").mae
        size, patch = mae.config.image_size, mae.config.patch_size
        image = F.interpolate(batch["image"].float(), size=(size, size), mode="area")
        hole = (F.interpolate(batch["mask"].float(), size=(size, size), mode="area") > 0).float()
        masked, _ = mae.token_masks(hole)
        grown = grow_token_mask(masked, self.config["min_masked_ratio"], batch["seed"])
        token_holes = grown.float().reshape(-1, 1, mae.grid, mae.grid)
        hole = torch.maximum(hole, F.interpolate(token_holes, scale_factor=patch, mode="nearest"))
        return image, hole, grown

    def training_step(self, batch: dict[str, Any], step: int, phase: str) -> dict[str, torch.Tensor]:
        image, hole, grown = self._inputs(batch)
        mae = self.unwrapped("mae").mae
        mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        prediction = mae.patchify((self.trainable["mae"](image, hole) - mean) / std)
        target = mae.patchify((image - mean) / std)
        if self.config["norm_pix_loss"]:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        per_token = ((prediction.float() - target) ** 2).mean(dim=-1)
        loss = ((per_token * grown).sum(dim=1) / grown.sum(dim=1)).mean()
        return {"loss": loss, "masked_ratio": grown.float().mean()}

    def validation_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """Reconstruction composited into the known pixels (before growing), at the data resolution."""
        mae = self.unwrapped("mae").mae
        size = batch["image"].shape[-1]
        image = F.interpolate(batch["image"].float(), size=(mae.config.image_size,) * 2, mode="area")
        reconstruction = mae.reconstruct(image, F.interpolate(batch["mask"], size=image.shape[-2:], mode="area"))
        reconstruction = F.interpolate(reconstruction, size=(size, size), mode="bilinear", align_corners=False)
        return (reconstruction * batch["mask"] + batch["image"] * (1 - batch["mask"])).clamp(0, 1)

    def save_output(self, out: Path) -> dict[str, Any]:
        self.unwrapped("mae").mae.save_pretrained(out / "mae", safe_serialization=True)
        return {"mae": "mae"}


def main(argv: list[str] | None = None) -> int:
    """``python -m asuka.train.mae``."""
    return main_for(MAEStage, argv)


if __name__ == "__main__":
    raise SystemExit(main())
