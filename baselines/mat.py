"""The ``mat`` method: MAT from its official Places2 512 weights, inferred as the official ``generate_image.py``.

Network and file readers are in :mod:`baselines.mat_net` (imported on first use, so registering the method stays
cheap). Inference:

- image in [-1, 1], mask 1 = known (the runner's masks are True = hole and are inverted here);
- latent ``np.random.seed(240); np.random.randn(1, 512)`` — drawn from a private ``RandomState(240)``, numpy's
  global state is untouched — used for every image, as IOPaint does (``generate_image.py`` draws a fresh latent per
  image in file order after that seed, so only its first image shares this latent; no resumable or sharded run can
  replay the sequence); truncation 1;
- ``--noise-mode const`` (``generate_image.py``'s default; IOPaint uses ``none``; ``random`` is also accepted);
- MAT stays random at inference even with ``const``: both stages replace a random half of their 16 × 16 bottleneck
  features with a projection of the latent (``F.dropout(..., training=True)`` upstream). That draw, and ``random``
  noise, come from a ``torch.Generator`` seeded with the image's own seed: reruns and resumes are bit-identical
  (upstream consumes CUDA's global generator seeded once with 240, which no CPU run can replay);
- height and width padded at the bottom/right to a multiple of 512 by symmetric reflection (the padding counted as
  known) and cropped back. The constant noise maps are 512 × 512, so inputs padded beyond that use seeded random
  noise under ``const``, as ``generate_image.py`` does for any resolution other than 512;
- output ``(x · 127.5 + 127.5).round().clamp(0, 255)`` as upstream; known pixels pasted back from the input; an image
  without hole is returned unchanged.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from baselines.base import DEVICE_OPTION, WEIGHTS_OPTION, InpaintingMethod, MethodOption, check_device, register_method
from baselines.signed_io import paste_back, signed_inputs
from baselines.torchscript import weights_record
from misato.errors import MisatoError
from misato.io import binarize_mask

NOISE_MODES = ("const", "none", "random")
WEIGHTS_ENTRY = "mat-places512"


class MATInpaint(InpaintingMethod):
    """MAT with the official Places2 512 generator.

    Args:
        weights: an explicit ``Places_512_FullData_G.pth`` or official ``*.pkl`` (trusted as given); None = the
            registry entry ``mat-places512`` (``$MISATO_WEIGHTS_DIR``, the caches; downloaded when online).
        noise_mode: ``const`` (``generate_image.py``), ``none`` (IOPaint) or ``random`` (seeded by the image seed).
        img_resolution: the network resolution (512 for the Places2/FFHQ/CelebA-HQ 512 files, 256 for CelebA-HQ 256);
            sides are padded to a multiple of it.
        device: torch device.
    """

    name = "mat"

    def __init__(self, weights: str | os.PathLike | None = None, noise_mode: str = "const",
                 img_resolution: int = 512, device: str = "cpu") -> None:
        from baselines.mat_net import load_generator, official_latent
        from misato.weights import resolve

        if noise_mode not in NOISE_MODES:
            raise MisatoError(f"--noise-mode {noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")
        self.device = check_device(device)
        self.weights = resolve(WEIGHTS_ENTRY, path=weights)
        self.noise_mode = noise_mode
        self.img_resolution = int(img_resolution)
        self.generator = load_generator(self.weights.path, self.img_resolution, device=str(self.device))
        self.z = official_latent(self.generator.z_dim).to(self.device)

    def effective_noise_mode(self, height: int, width: int) -> str:
        """The noise mode for a padded input of ``height × width``: ``const`` needs exactly the network resolution
        (its maps are that size) and becomes ``random`` otherwise, as in ``generate_image.py``."""
        r = self.img_resolution
        return "random" if self.noise_mode == "const" and (height, width) != (r, r) else self.noise_mode

    def network_inputs(self, image: np.ndarray, hole: np.ndarray):
        """``(images_in [1, 3, H', W'] in [-1, 1], masks_in [1, 1, H', W'] with 1 = known)``, padded (see above)."""
        return signed_inputs(image, hole, self.img_resolution, self.device)

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        import torch

        hole = binarize_mask(mask)
        if not hole.any():
            return image.copy()
        images_in, masks_in = self.network_inputs(image, hole)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        with torch.no_grad():
            output = self.generator(images_in, masks_in, self.z, truncation_psi=1,
                                    noise_mode=self.effective_noise_mode(*masks_in.shape[-2:]), generator=generator)
        output = (output.permute(0, 2, 3, 1) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
        return paste_back(output[0].cpu().numpy(), image, hole)

    def describe(self) -> dict[str, Any]:
        import torch

        from baselines.mat_net import OFFICIAL_SEED

        r = self.img_resolution
        return {
            "method": self.name,
            **weights_record(self.weights.path, self.weights.origin, self.weights.sha256),
            "noise_mode": self.noise_mode,
            "noise_mode_beyond_network_size": self.effective_noise_mode(0, 0),
            "truncation_psi": 1,
            "latent": f"numpy RandomState({OFFICIAL_SEED}).randn(1, {self.generator.z_dim}), the same for every image",
            "bottleneck_dropout_and_random_noise": "torch.Generator seeded with the image seed",
            "img_resolution": r,
            "padding": f"bottom/right to a multiple of {r}, symmetric reflection, counted as known",
            "mask": "True = hole, inverted to MAT's 1 = known",
            "paste_back": True,
            "torch": torch.__version__,
        }


register_method(
    "mat",
    MATInpaint,
    options=(
        WEIGHTS_OPTION,
        MethodOption("noise_mode", str, "MAT noise: const (official generate_image.py), none (IOPaint), random",
                     NOISE_MODES, "const"),
        DEVICE_OPTION,
    ),
    weights=(WEIGHTS_ENTRY,),
    description="MAT (mask-aware transformer, Places2 512), official Places_512_FullData_G.pth or .pkl; CC BY-NC",
    gpu_advised=True,
)
