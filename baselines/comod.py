"""The ``comod`` method: Co-Mod-GAN from the PyTorch port's converted ``*_net_G_ema.pth`` (Places2 512 by default).

Network and file reading are in :mod:`baselines.comod_net` (imported on first use, so registering stays cheap).
Inference follows the port's ``test.py`` (``--model comod --netG comodgan``, batch size 1, ``--mixing 0``) and the
official TF ``run_generator.py``, except where those are not reproducible:

- image in [-1, 1]; the runner's mask (True = hole) is passed as the port's 1 = hole (the official TF model takes
  1 = known; the port inverts inside its synthesis network, ``1 - masks_in``);
- the network has one fixed resolution R (512 for Places2; read off the checkpoint): images up to R × R are padded
  at the bottom/right to R × R by symmetric reflection (the padding counted as known) and cropped back; larger
  images are refused (the port and the official script take exactly R × R);
- one latent z per image, ``torch.randn([1, 512])`` from a ``torch.Generator`` seeded with the image seed (upstream
  draws from unseeded global generators, so no upstream run is reproducible); the noise of every styled
  convolution follows from the same generator (``--noise-mode random``, upstream's behaviour) or is off
  (``none``). The converted files carry no constant noise maps, so there is no ``const`` mode;
- truncation ψ = 1 by default (both upstream scripts); ``--truncation ψ`` uses ``w_avg + ψ (w − w_avg)`` with
  ``w_avg`` the mean w of 4096 latents from ``torch.Generator().manual_seed(0)`` (the port's ``mean_latent(4096)``,
  unseeded there; the converted files carry no ``dlatent_avg``);
- output quantised as upstream, ``((clamp(x, -1, 1) + 1) / 2 · 255)`` truncated to ``uint8``; known pixels pasted
  back from the input; an image without hole is returned unchanged.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from baselines.base import DEVICE_OPTION, WEIGHTS_OPTION, InpaintingMethod, MethodOption, check_device, register_method
from baselines.signed_io import paste_back, signed_inputs
from misato.errors import MisatoError
from misato.io import binarize_mask

NOISE_MODES = ("random", "none")
WEIGHTS_ENTRY = "comod-places512"
MEAN_LATENT = (4096, 0)
"""Latents averaged for the truncation centre, and the seed they are drawn with."""


class CoModInpaint(InpaintingMethod):
    """Co-Mod-GAN (PyTorch port layout).

    Args:
        weights: an explicit port checkpoint (``co-mod-gan-places2-050000_net_G_ema.pth``, or an FFHQ one; trusted
            as given, hashed for the record); None = the registry entry ``comod-places512``.
        noise_mode: ``random`` (upstream; seeded by the image seed) or ``none``.
        truncation: ψ; 1 = none (upstream default).
        device: torch device.
    """

    name = "comod"

    def __init__(self, weights: str | os.PathLike | None = None, noise_mode: str = "random", truncation: float = 1.0,
                 device: str = "cpu") -> None:
        import torch

        from baselines.comod_net import load_generator
        from misato.weights import resolve

        if noise_mode not in NOISE_MODES:
            raise MisatoError(f"--noise-mode {noise_mode!r}: comod accepts {', '.join(NOISE_MODES)} (the converted "
                              "checkpoints carry no constant noise maps)")
        if not 0 <= float(truncation) <= 1:
            raise MisatoError(f"--truncation {truncation}: must be in [0, 1] (1 = no truncation)")
        self.device = check_device(device)
        self.weights = resolve(WEIGHTS_ENTRY, path=weights)
        self.noise_mode = noise_mode
        self.truncation = float(truncation)
        self.generator = load_generator(self.weights.path, device=str(self.device))
        self.resolution = self.generator.config.resolution
        self.w_avg = None
        if self.truncation != 1:
            with torch.no_grad():
                self.w_avg = self.generator.mean_latent(*MEAN_LATENT)

    def latent(self, seed: int):
        """``(z [1, 512] float32, torch.Generator)`` for an image seed: z is the generator's first draw (on CPU, so
        identical on every device); the noise maps follow from the same generator."""
        import torch

        from baselines.comod_net import LATENT_SIZE

        generator = torch.Generator().manual_seed(int(seed))
        z = torch.randn([1, LATENT_SIZE], generator=generator)
        if self.device.type != "cpu":
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        return z.to(self.device), generator

    def network_inputs(self, image: np.ndarray, hole: np.ndarray):
        """``(images_in [1, 3, R, R] in [-1, 1], masks_in [1, 1, R, R] with 1 = hole)``, padded (see above)."""
        if hole.shape[0] > self.resolution or hole.shape[1] > self.resolution:
            raise MisatoError(f"comod: image of {hole.shape[1]}x{hole.shape[0]} pixels is larger than the network's "
                              f"{self.resolution}x{self.resolution}; resize it (Co-Mod-GAN runs at one fixed size)")
        images_in, known = signed_inputs(image, hole, self.resolution, self.device)
        return images_in, 1 - known

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        import torch

        hole = binarize_mask(mask)
        if not hole.any():
            return image.copy()
        images_in, masks_in = self.network_inputs(image, hole)
        z, generator = self.latent(seed)
        with torch.no_grad():
            output = self.generator(images_in, masks_in, z, truncation=self.truncation,
                                    truncation_latent=self.w_avg, noise_mode=self.noise_mode, generator=generator)
        pixels = ((output.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)  # the port's test.py: truncated
        return paste_back(pixels[0].permute(1, 2, 0).cpu().numpy(), image, hole)

    def describe(self) -> dict[str, Any]:
        import torch

        config = self.generator.config
        return {
            "method": self.name,
            "weights": {"file": str(self.weights.path), "sha256": self.weights.sha256, "origin": self.weights.origin},
            "resolution": config.resolution,
            "config": {"fmap_base": config.fmap_base, "fmap_max": config.fmap_max,
                       "dlatent_size": config.dlatent_size},
            "truncation": self.truncation,
            "truncation_latent": (None if self.w_avg is None else
                                  f"mean w of {MEAN_LATENT[0]} z from torch.Generator().manual_seed({MEAN_LATENT[1]})"),
            "noise_mode": self.noise_mode,
            "latent": "torch.randn([1, 512]) from torch.Generator().manual_seed(image seed); noise from the same "
                      "generator after it",
            "padding": f"bottom/right to {config.resolution}x{config.resolution}, symmetric reflection, counted as "
                       "known; larger images refused",
            "mask": "True = hole, passed as the port's 1 = hole",
            "quantisation": "((clamp(x,-1,1)+1)/2*255) truncated to uint8 (port test.py)",
            "paste_back": True,
            "device": str(self.device),
            "torch": torch.__version__,
        }


register_method(
    "comod",
    CoModInpaint,
    options=(
        WEIGHTS_OPTION,
        # one --noise-mode flag serves comod and mat (the first declaration's help is shown): say both, no default
        MethodOption("noise_mode", str, "noise of the GAN methods: comod random (default; seeded by the image seed) "
                     "or none; mat const (default), none or random", NOISE_MODES),
        MethodOption("truncation", float, "Co-Mod-GAN truncation psi in [0, 1] (1 = none, upstream default)",
                     default=1.0, bounds=(0.0, 1.0)),
        DEVICE_OPTION,
    ),
    weights=(WEIGHTS_ENTRY,),
    description="Co-Mod-GAN (Places2 512), the PyTorch port's co-mod-gan-places2-050000_net_G_ema.pth; "
                "StyleGAN2 parts NVIDIA non-commercial",
    gpu_advised=True,
)
