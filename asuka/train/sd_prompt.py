"""Stage ``sd-prompt``: learnable prompt embeddings (textual-inversion style) for plain SD inpainting, trained with
the alignment stage's loop and loss (:mod:`asuka.train.diffusion`): the paper's SD-prompt baseline.

The embeddings ``[1, L, cross_attention_dim]`` start from the CLIP text encoding of ``--init-prompt`` (the SD
folder's tokenizer and text encoder; L = 77) or from an embeddings file (``--init-embeds``), and replace the text
condition for every image. The paper gives no hyper-parameters for this baseline: lr 1e-3 and the alignment
stage's batch, steps and resolution are the defaults. Output: ``OUT/prompt_embeds.safetensors``, the file
``misato inpaint --method sd-prompt --prompt-embeds FILE`` loads (:func:`asuka.sd_variants.load_prompt_embeds`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from asuka.sd_variants import encode_prompt, load_prompt_embeds, save_prompt_embeds
from asuka.train.diffusion import DiffusionStage
from asuka.train.loop import Optimiser, adamw, lr_scheduler_for, main_for
from misato.errors import MisatoError

OUTPUT_FILE = "prompt_embeds.safetensors"


class PromptEmbeddings(torch.nn.Module):
    """One learnable condition ``[1, L, D]``; ``forward(batch_size)`` → ``[B, L, D]``."""

    def __init__(self, embeds: torch.Tensor) -> None:
        super().__init__()
        self.embeds = torch.nn.Parameter(embeds.detach().clone().float())

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.embeds.expand(batch_size, -1, -1)


class SDPromptStage(DiffusionStage):
    """Train learnable prompt embeddings for SD inpainting (the SD-prompt baseline)."""

    name = "sd-prompt"
    component = "prompt-embeds"
    outputs = (OUTPUT_FILE,)
    uses_masks = True
    defaults = {**DiffusionStage.defaults, "lr": 1e-3, "weight_decay": 0.0}

    @classmethod
    def add_arguments(cls, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--init-prompt", default="",
                            help="text whose CLIP encoding starts the embeddings (default: the empty prompt)")
        parser.add_argument("--init-embeds", default=None,
                            help="start from a prompt-embeddings file instead (.safetensors/.pt)")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if config["init_embeds"] is not None:
            embeds = load_prompt_embeds(config["init_embeds"])
            self.sources["init_embeds"] = config["init_embeds"]
        else:
            embeds = encode_prompt(config["sd"], config["init_prompt"])
        width = self.pipe.unet.config.cross_attention_dim
        if embeds.shape[-1] != width:
            raise MisatoError(f"prompt embeddings are {embeds.shape[-1]}-d but the UNet of --sd takes {width}-d")
        self.trainable = {"prompt": PromptEmbeddings(embeds)}

    def optimisers(self) -> list[Optimiser]:
        optimizer = adamw(self.trainable["prompt"].parameters(), self.config)
        return [Optimiser("prompt", ("prompt",), optimizer, lr_scheduler_for(optimizer, self.config))]

    def condition(self, batch: dict[str, Any], step: int) -> torch.Tensor:
        return self.trainable["prompt"](batch["image"].shape[0])

    def validation_images(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.sample(batch, prompt_embeds=self.trainable["prompt"].embeds.detach())

    def save_output(self, out: Path) -> dict[str, Any]:
        save_prompt_embeds(out / OUTPUT_FILE, self.trainable["prompt"].embeds)
        return {"prompt-embeds": OUTPUT_FILE}


def main(argv: list[str] | None = None) -> int:
    """``python -m asuka.train.sd_prompt``."""
    return main_for(SDPromptStage, argv)


if __name__ == "__main__":
    raise SystemExit(main())
