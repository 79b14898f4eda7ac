"""FLUX adapters: ``asuka-flux`` (the released ASUKA-FLUX.1-Fill) and ``flux-fill`` (plain FLUX.1-Fill-dev).

Both run :class:`asuka.flux.pipeline.ASUKAFluxFillPipeline`: ``asuka-flux`` with the aligned MAE prior and ASUKA's
decoder (an ``misato asuka assemble --flux … --asuka-flux …`` folder), ``flux-fill`` with precomputed empty-prompt
T5/CLIP features (``--prompt-embeds``; no text encoder is loaded) and the FLUX AE decoder. Release settings are the
defaults: 50 steps, guidance 30, every image's noise from seed 42, condition weight 0.5, bfloat16.

Format and polarity: the runner's RGB ``uint8 [H, W, 3]`` images and ``bool [H, W]`` masks (True = hole) are what
the pipeline takes (white = repaint). Sides that are not a multiple of 16 are padded (symmetric reflection, padding
counted as known) and cropped back; MISATO@512 and @1K need no padding. Output: rounded to uint8 with the known
pixels pasted back (the project's convention), or with ``official_quantisation`` the release's
``clip(x·255).astype(uint8)`` truncation without paste-back. Heavy imports happen in the constructor.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from baselines.base import InpaintingMethod, MethodOption, check_device, checked_hole, register_method
from baselines.diffusion import _COMMON as _DIFFUSION_OPTIONS
from baselines.diffusion import _PROMPT_EMBEDS, check_model_folder, weight_files
from baselines.signed_io import bottom_right_padding, pad_symmetric
from misato.errors import MisatoError

DTYPES = ("bf16", "fp16", "fp32")
ASUKA_COMPONENTS = ["transformer", "vae", "scheduler", "mae", "alignment_t5", "alignment_clip", "none_features",
                    "decoder"]
FILL_COMPONENTS = ["transformer", "vae", "scheduler"]
SIDE_MULTIPLE = 16


def read_prompt_embeds(path: str | os.PathLike) -> tuple[Any, Any]:
    """``prompt_embeds [1, L, 4096]`` and ``pooled_prompt_embeds [1, 768]`` from a ``.safetensors``/``.pt`` file
    holding both names (see docs/asuka-flux.md for how to write it from the empty prompt)."""
    from misato.checkpoint import read_state_dict

    state = read_state_dict(path, "FLUX prompt embeddings", wrappers=())
    missing = [k for k in ("prompt_embeds", "pooled_prompt_embeds") if k not in state]
    if missing:
        raise MisatoError(f"--prompt-embeds {path}: missing {', '.join(missing)}")
    txt, vec = state["prompt_embeds"], state["pooled_prompt_embeds"]
    if txt.ndim != 3 or vec.ndim != 2 or txt.shape[0] != 1 or vec.shape[0] != 1:
        raise MisatoError(f"--prompt-embeds {path}: expected prompt_embeds [1, L, D] and pooled_prompt_embeds [1, D], "
                          f"got {tuple(txt.shape)} and {tuple(vec.shape)}")
    return txt, vec


class FluxFillInpaint(InpaintingMethod):
    """``asuka-flux`` or ``flux-fill``.

    Args:
        method: ``asuka-flux`` or ``flux-fill``.
        model: an assembled ASUKA-FLUX folder (``asuka-flux``) or a diffusers FLUX.1-Fill folder (``flux-fill``).
        steps: flow-matching steps (50).
        guidance: FLUX's distilled guidance (30).
        noise_seed: seed of every image's initial noise (42, as released); negative = the runner's per-image seeds.
        condition_weight: ``asuka-flux``: w in ``none + w·(feat − none)`` (0.5).
        prompt_embeds: ``flux-fill``: file with the empty prompt's ``prompt_embeds`` / ``pooled_prompt_embeds``.
        paste_back: copy known pixels from the input (default on; off under ``official_quantisation``).
        official_quantisation: truncate like the release (``clip(x·255).astype(uint8)``) and do not paste back.
        device: ``cpu``, ``cuda[:N]`` or ``mps``; dtype: ``bf16`` (as released), ``fp16`` or ``fp32``.
        cpu_offload: diffusers' ``enable_model_cpu_offload`` (CUDA only; for 24 GB GPUs).
    """

    def __init__(
        self,
        method: str,
        model: str | os.PathLike | None = None,
        steps: int = 50,
        guidance: float = 30.0,
        noise_seed: int = 42,
        condition_weight: float = 0.5,
        prompt_embeds: str | os.PathLike | None = None,
        paste_back: bool | None = None,
        official_quantisation: bool = False,
        device: str = "cpu",
        dtype: str = "bf16",
        cpu_offload: bool = False,
    ) -> None:
        import torch

        from asuka.flux.assemble import load_flux_fill_parts
        from asuka.flux.pipeline import ASUKAFluxFillPipeline
        from misato.weights import file_sha256

        if model is None:
            raise MisatoError(f"method {method} needs --model DIR")
        if steps < 1:
            raise MisatoError(f"--steps must be at least 1, got {steps}")
        if dtype not in DTYPES:
            raise MisatoError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if (method == "flux-fill") != (prompt_embeds is not None):
            raise MisatoError("--prompt-embeds FILE (the empty prompt's T5/CLIP features) is required by flux-fill "
                              "and only used by it")
        if official_quantisation and paste_back:
            raise MisatoError("--official-quantisation reproduces the release, which does not paste back; "
                              "drop --paste-back")
        self.device = check_device(device)
        if cpu_offload and self.device.type != "cuda":
            raise MisatoError("--cpu-offload moves each model to the GPU when it runs: it needs --device cuda[:N]")
        self.name = method
        self.model = Path(model)
        self.steps, self.guidance, self.noise_seed = int(steps), float(guidance), int(noise_seed)
        self.condition_weight = float(condition_weight)
        self.official_quantisation = bool(official_quantisation)
        self.paste_back = not self.official_quantisation if paste_back is None else bool(paste_back)
        self.dtype, self.cpu_offload = dtype, bool(cpu_offload)
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        self.prompt = None
        components = ASUKA_COMPONENTS if method == "asuka-flux" else FILL_COMPONENTS
        check_model_folder(self.model, components, "an assembled ASUKA-FLUX folder" if method == "asuka-flux"
                           else "a diffusers FLUX.1-Fill folder")
        try:
            if method == "asuka-flux":
                pipe = ASUKAFluxFillPipeline.from_pretrained(self.model, local_files_only=True, dtype=torch_dtype)
            else:
                transformer, vae, scheduler = load_flux_fill_parts(self.model, "--model", torch_dtype)
                pipe = ASUKAFluxFillPipeline(scheduler=scheduler, vae=vae, transformer=transformer)
                self.prompt = tuple(t.to(torch_dtype) for t in read_prompt_embeds(prompt_embeds))
            pipe.check_components()
            if pipe.mae is not None:  # MAEPrior normalises its input in float32: it runs in float32 (0.45 GB)
                pipe.mae.to(torch.float32)
        except (OSError, ValueError) as error:
            raise MisatoError(f"cannot load {method} from {self.model}: {error}") from None
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.weights = {str(p.relative_to(self.model)): file_sha256(p) for p in weight_files(self.model, components)}
        if prompt_embeds is not None:
            self.weights[str(Path(prompt_embeds).resolve())] = file_sha256(prompt_embeds)

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        return self.inpaint([image], [mask], [seed])[0]

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """Images of the same size go through the pipeline together (one generator per image, so each image's noise
        does not depend on the batch; the network's rounding may, by one level in a pixel); others one by one."""
        import torch

        holes = [checked_hole(self.name, image, mask) for image, mask in zip(images, masks)]
        results: list[np.ndarray | None] = [image.copy() if not hole.any() else None
                                            for image, hole in zip(images, holes)]
        todo = [i for i, result in enumerate(results) if result is None]
        for shape in dict.fromkeys(images[i].shape for i in todo):
            group = [i for i in todo if images[i].shape == shape]
            height, width = shape[:2]
            pad = bottom_right_padding(height, width, SIDE_MULTIPLE)
            batch_images = np.stack([pad_symmetric(images[i], SIDE_MULTIPLE) for i in group])
            batch_holes = np.stack([np.pad(holes[i], pad, constant_values=False) for i in group])
            generators = [torch.Generator("cpu").manual_seed(self.noise_seed if self.noise_seed >= 0 else int(seeds[i]))
                          for i in group]
            extra = ({"condition_weight": self.condition_weight} if self.prompt is None
                     else {"prompt_embeds": self.prompt[0], "pooled_prompt_embeds": self.prompt[1]})
            output = self.pipe(
                list(batch_images), list(batch_holes),  # True = hole = repaint: the pipeline's polarity already
                num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generators,
                output_type="np", paste_back=self.paste_back, **extra,
            ).images
            for index, array in zip(group, output):
                array = array[:height, :width]
                results[index] = (np.clip(array * 255, 0, 255).astype(np.uint8) if self.official_quantisation
                                  else np.rint(array * 255).astype(np.uint8))
        return results

    def describe(self) -> dict[str, Any]:
        import diffusers
        import torch

        return {
            "method": self.name,
            "model": str(self.model.resolve()),
            "steps": self.steps,
            "guidance": self.guidance,
            "noise_seed": self.noise_seed,
            "condition_weight": self.condition_weight if self.name == "asuka-flux" else None,
            "mae_preprocessing": "official" if self.name == "asuka-flux" else None,
            "paste_back": self.paste_back,
            "official_quantisation": self.official_quantisation,
            "padding": f"symmetric to a multiple of {SIDE_MULTIPLE}, cropped back",
            "device": str(self.device),
            "dtype": self.dtype,
            "cpu_offload": self.cpu_offload,
            "weights_sha256": self.weights,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }


_COMMON = _DIFFUSION_OPTIONS + (
    MethodOption("guidance", float, "FLUX distilled guidance", default=30.0),
    MethodOption("noise_seed", int, "seed of every image's initial noise (release: 42); negative = per-image seeds "
                 "from --seed", default=42),
    MethodOption("official_quantisation", bool, "truncate to uint8 and skip paste-back, as the release does"),
    MethodOption("dtype", str, "weights and activations dtype", choices=DTYPES, default="bf16"),
    MethodOption("cpu_offload", bool, "diffusers model CPU offload (CUDA; fits 24 GB GPUs)"),
)
register_method(
    "asuka-flux", lambda **options: FluxFillInpaint("asuka-flux", **options),
    options=_COMMON + (MethodOption("condition_weight", float, "w in none + w*(feat - none)", default=0.5),),
    weights=("asuka-flux-decoder", "asuka-flux-alignment-t5", "asuka-flux-alignment-clip", "asuka-flux-none-txt",
             "asuka-flux-none-vec", "asuka-flux-mae"),
    description="ASUKA-FLUX.1-Fill (released): FLUX.1-Fill-dev with the aligned MAE prior and ASUKA's decoder",
    gpu_advised=True,
)
register_method(
    "flux-fill", lambda **options: FluxFillInpaint("flux-fill", **options),
    options=_COMMON + (_PROMPT_EMBEDS,),
    description="FLUX.1-Fill-dev, empty prompt (precomputed T5/CLIP features)",
    gpu_advised=True,
)
