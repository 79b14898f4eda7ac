"""Real-weight checks (marked slow; each skips unless its environment variable points at the files).

- ``MISATO_SD_INPAINT_DIR``: a diffusers SD-1.5-inpainting folder.
- ``MISATO_MAE_CKPT``: ASUKA's / MAE-FAR's ``mae_300.pth``.
- ``MISATO_ASUKA_DECODER_CKPT``: an ASUKA or Asymmetric-VQGAN decoder Lightning checkpoint.
- ``MISATO_ASUKA_DIR``: an assembled ASUKA folder (``misato asuka assemble``); ``MISATO_ASUKA_STEPS`` steps (5).

Run with ``MISATO_RUN_SLOW=1 python -m pytest tests/asuka/test_real_weights.py``; expect minutes per test on CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"set {name} to run this real-weight test")
    return Path(value)


def astronaut_case(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, transform

    image = (transform.resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
    mask = np.zeros((size, size), bool)
    mask[size // 4 : size // 2, size // 2 : 3 * size // 4] = True
    return image, mask


def test_mae_300_loads_strictly():
    from asuka.convert import load_mae_checkpoint

    mae = load_mae_checkpoint(env_path("MISATO_MAE_CKPT")).eval()
    assert mae.config.embed_dim == 768 and mae.config.decoder_depth == 8 and mae.config.partial_token_embedding
    image, mask = astronaut_case()
    with torch.no_grad():
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0
        hole = torch.from_numpy(mask)[None, None].float()
        prior = mae(tensor, hole)
        reconstruction = mae.reconstruct(tensor, hole)
    assert prior.shape == (1, 256, 512) and torch.isfinite(prior).all()
    # a trained MAE reconstructs the known region well (error far below a random image's)
    small = torch.nn.functional.interpolate(tensor, size=(256, 256), mode="area")
    known = torch.nn.functional.interpolate(hole, size=(256, 256), mode="area") == 0
    assert (reconstruction - small).abs().mean(1, keepdim=True)[known].mean() < 0.1


def test_decoder_checkpoint_loads_strictly():
    from asuka.convert import load_decoder_checkpoint

    decoder = load_decoder_checkpoint(env_path("MISATO_ASUKA_DECODER_CKPT"))
    assert decoder.config.latent_channels == 4


def test_sd_path_matches_diffusers_on_real_weights():
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    from asuka.pipeline import ASUKAInpaintPipeline
    from asuka.sd_variants import encode_prompt

    folder = env_path("MISATO_SD_INPAINT_DIR")
    image, mask = astronaut_case()
    reference = StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                               requires_safety_checker=False)
    expected = reference(prompt="", image=Image.fromarray(image), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
                         num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(0),
                         output_type="np").images
    ours = ASUKAInpaintPipeline.from_sd_inpaint(folder)
    got = ours(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np",
               prompt_embeds=encode_prompt(folder, ""), paste_back=False).images
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_asuka_adapter_on_real_weights():
    from baselines import create_method

    method = create_method("asuka", model=env_path("MISATO_ASUKA_DIR"), steps=int(os.environ.get("MISATO_ASUKA_STEPS", "5")))
    image, mask = astronaut_case()
    out = method.inpaint_one(image, mask, seed=0)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[~mask], image[~mask])
    np.testing.assert_array_equal(out, method.inpaint_one(image, mask, seed=0))
