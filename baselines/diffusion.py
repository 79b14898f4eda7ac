"""Diffusion adapters: ``asuka``, ``sd``, ``sd-text`` and ``sd-prompt`` (paper Table 1), one code path.

All four run :class:`asuka.pipeline.ASUKAInpaintPipeline`; they differ in the condition (aligned MAE prior, empty
prompt, ``"background"``, learned prompt embeddings) and in the decoder (ASUKA's inpainting decoder if the model
folder has one, else the KL-VAE decoder).

Format and polarity: the runner gives RGB ``uint8 [H, W, 3]`` and ``bool [H, W]`` masks with True = hole; diffusers
inpainting also wants 1/white = hole (repaint), so the mask is passed as is (no inversion). Sizes that are not a
multiple of 8 are padded (symmetric reflection of the image, padding counted as known) and the result is cropped
back. An image without hole is returned unchanged. Known pixels are pasted back unless ``paste_back=False``.
Heavy imports (torch, diffusers) happen in the constructor, so importing this module is cheap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from baselines.base import DEVICE_OPTION, InpaintingMethod, MethodOption, check_device, checked_hole, register_method
from baselines.signed_io import bottom_right_padding, pad_symmetric
from misato.errors import MisatoError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
WEIGHTLESS_COMPONENTS = ("scheduler", "tokenizer")


def weight_files(folder: Path, components: list[str]) -> list[Path]:
    """The weight files diffusers/transformers load for ``components`` of a model folder (safetensors preferred)."""
    files = []
    for component in components:
        candidates = sorted(p for p in (folder / component).glob("*") if p.suffix in WEIGHT_SUFFIXES)
        safetensors = [p for p in candidates if p.suffix == ".safetensors"]
        files.extend(safetensors or candidates)
    return files


def check_model_folder(folder: Path, required: list[str], what: str) -> None:
    """Refuse a model folder lacking a component subfolder, naming what is missing and how to build it."""
    if not folder.is_dir():
        raise MisatoError(f"--model {folder}: no such folder ({what})")
    missing = [
        c for c in required
        if not (folder / c).is_dir() or (c not in WEIGHTLESS_COMPONENTS and not weight_files(folder, [c]))
    ]
    if missing:
        raise MisatoError(f"--model {folder}: missing component(s) {', '.join(missing)} ({what}); "
                          "see docs/asuka.md for how to obtain and assemble them")


class DiffusionInpaint(InpaintingMethod):
    """Any of the four diffusion methods.

    Args:
        method: ``asuka``, ``sd``, ``sd-text`` or ``sd-prompt``.
        model: for ``asuka`` an assembled ASUKA folder (``misato asuka assemble``); for the SD methods a diffusers
            SD-inpainting folder (``sd``/``sd-text`` also need its ``tokenizer``/``text_encoder``).
        steps: denoising steps (50 as in the paper).
        prompt_embeds: ``sd-prompt`` only: the learned prompt embeddings file.
        paste_back: copy known pixels from the input into the output.
        guidance_scale: classifier-free guidance for the text methods (1 = off; the paper's value is not stated).
        device, dtype: torch device and ``float32``/``float16``.
    """

    def __init__(
        self,
        method: str,
        model: str | os.PathLike | None = None,
        steps: int = 50,
        prompt_embeds: str | os.PathLike | None = None,
        paste_back: bool = True,
        guidance_scale: float = 1.0,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        import torch

        from asuka.pipeline import ASUKAInpaintPipeline
        from asuka.sd_variants import SD_PROMPTS, encode_prompt, load_prompt_embeds
        from misato.weights import file_sha256

        if model is None:
            raise MisatoError(f"method {method} needs --model DIR")
        if steps < 1:
            raise MisatoError(f"--steps must be at least 1, got {steps}")
        if guidance_scale > 1 and method not in SD_PROMPTS:
            raise MisatoError(f"--guidance-scale applies to sd and sd-text only (the negative is the empty prompt), "
                              f"not {method}")
        if (method == "sd-prompt") != (prompt_embeds is not None):
            raise MisatoError("--prompt-embeds FILE is required by sd-prompt and only used by it")
        self.name = method
        self.model = Path(model)
        self.steps = int(steps)
        self.paste_back = bool(paste_back)
        self.guidance_scale = float(guidance_scale)
        self.device = check_device(device)
        if dtype not in ("float32", "float16"):
            raise MisatoError(f"dtype must be float32 or float16, got {dtype!r}")
        # only non-default dtypes are passed on (diffusers renamed the argument; float32 is its default anyway)
        load_dtype = {"torch_dtype": torch.float16} if dtype == "float16" else {}
        self.prompt: str | None = SD_PROMPTS.get(method)
        self.prompt_embeds = None
        self.negative_prompt_embeds = None
        try:
            if method == "asuka":
                components = ["unet", "vae", "scheduler", "mae", "alignment"]
                check_model_folder(self.model, components, "an assembled ASUKA folder")
                if (self.model / "decoder").is_dir():
                    components.append("decoder")
                pipe = ASUKAInpaintPipeline.from_pretrained(self.model, local_files_only=True, **load_dtype)
            else:
                components = ["unet", "vae", "scheduler"]
                text = method in SD_PROMPTS
                if text:
                    components += ["text_encoder", "tokenizer"]
                check_model_folder(self.model, components, "a diffusers SD-inpainting folder")
                pipe = ASUKAInpaintPipeline.from_sd_inpaint(self.model, **load_dtype)
                if text:
                    self.prompt_embeds = encode_prompt(self.model, self.prompt)
                    if self.guidance_scale > 1:
                        self.negative_prompt_embeds = encode_prompt(self.model, "")
                else:
                    self.prompt_embeds = load_prompt_embeds(prompt_embeds)
        except (OSError, ValueError) as error:
            raise MisatoError(f"cannot load {method} from {self.model}: {error}") from None
        self.pipe = pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.weights = {str(p.relative_to(self.model)): file_sha256(p) for p in weight_files(self.model, components)}
        if prompt_embeds is not None:
            self.weights[str(Path(prompt_embeds).resolve())] = file_sha256(prompt_embeds)
        self.dtype = dtype

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        import torch

        hole = checked_hole(self.name, image, mask)
        if not hole.any():
            return image.copy()
        height, width = hole.shape
        padded_image = pad_symmetric(image, 8)
        padded_hole = np.pad(hole, bottom_right_padding(height, width, 8), constant_values=False)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        result = self.pipe(
            padded_image,
            padded_hole,  # True = hole = repaint: the diffusers polarity already
            num_inference_steps=self.steps,
            generator=generator,
            output_type="np",
            prompt_embeds=self.prompt_embeds,
            negative_prompt_embeds=self.negative_prompt_embeds,
            guidance_scale=self.guidance_scale,
            paste_back=self.paste_back,
        ).images[0]
        return np.rint(result[:height, :width] * 255).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        import diffusers
        import torch

        return {
            "method": self.name,
            "model": str(self.model.resolve()),
            "steps": self.steps,
            "prompt": self.prompt,
            "guidance_scale": self.guidance_scale,
            "paste_back": self.paste_back,
            "decoder": "inpainting" if getattr(self.pipe, "decoder", None) is not None else "kl-vae",
            "mae_preprocessing": "official" if self.name == "asuka" else None,
            "padding": "symmetric to a multiple of 8, cropped back",
            "device": str(self.device),
            "dtype": self.dtype,
            "weights_sha256": self.weights,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }


_COMMON = (
    MethodOption("model", str, "model folder: assembled ASUKA folder (asuka), diffusers SD-inpainting folder (sd*), "
                 "assembled ASUKA-FLUX folder (asuka-flux) or diffusers FLUX.1-Fill folder (flux-fill)"),
    MethodOption("steps", int, "denoising steps (default 50)", bounds=(1, 1000)),
    MethodOption("paste_back", bool, "copy the known pixels from the input into the output (default on)"),
    DEVICE_OPTION,
)
_GUIDANCE = MethodOption("guidance_scale", float, "classifier-free guidance, the empty prompt as negative (default off)")
_PROMPT_EMBEDS = MethodOption("prompt_embeds", str, "prompt embeddings file (.safetensors/.pt): learned tokens "
                              "(sd-prompt) or the empty prompt's T5/CLIP features (flux-fill)")
_DESCRIPTIONS = {
    "asuka": ("ASUKA: SD-inpainting conditioned on an aligned MAE prior, inpainting decoder", ()),
    "sd": ("SD-1.5 inpainting, empty prompt", (_GUIDANCE,)),
    "sd-text": ("SD-1.5 inpainting, prompt 'background'", (_GUIDANCE,)),
    "sd-prompt": ("SD-1.5 inpainting with learned prompt embeddings", (_PROMPT_EMBEDS,)),
}
for _name, (_description, _extra) in _DESCRIPTIONS.items():
    register_method(_name, lambda _method=_name, **options: DiffusionInpaint(_method, **options),
                    options=_COMMON + _extra, description=_description, gpu_advised=True)
