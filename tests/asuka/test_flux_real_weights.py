"""Real-weight checks for ASUKA-FLUX (marked slow; each skips unless its environment variable is set).

- ``MISATO_ASUKA_FLUX_RELEASE``: a folder with the released files (``asuka_decoder.ckpt``,
  ``asuka_alignment_t5.pt``, ``asuka_alignment_clip.pt``, ``txt_256.pt``, ``vec.pt``, ``mae_300.pth``).
- ``MISATO_ASUKA_FLUX_DIR``: an assembled ASUKA-FLUX folder; ``MISATO_ASUKA_FLUX_REFERENCE``: optionally a PNG the
  same call produced before (``MISATO_ASUKA_FLUX_STEPS`` steps, default 4, fp32 on CPU), compared exactly.

Run with ``MISATO_RUN_SLOW=1 python -m pytest tests/asuka/test_flux_real_weights.py`` (the alignment file alone
needs 4 GB of RAM in fp32; the assembled model needs a GPU-sized machine).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.asuka.test_real_weights import astronaut_case, env_path

pytestmark = pytest.mark.slow


def test_released_alignment_files_load_strictly_at_their_published_sizes():
    from asuka.flux.loaders import load_flux_alignment, load_none_features

    release = env_path("MISATO_ASUKA_FLUX_RELEASE")
    t5, report = load_flux_alignment(release / "asuka_alignment_t5.pt")
    assert report.ok and t5.config.dim == 4096 and t5.config.num_layers == 4 and t5.config.num_heads == 64
    assert sum(p.numel() for p in t5.parameters()) == 1_008_923_136
    clip, report = load_flux_alignment(release / "asuka_alignment_clip.pt")
    assert report.ok and clip.config.dim == 768 and sum(p.numel() for p in clip.parameters()) == 35_819_264
    features = load_none_features(release / "txt_256.pt", release / "vec.pt", txt_dim=4096, vec_dim=768)
    assert features.txt.shape == (1, 256, 4096) and features.vec.shape == (1, 768)


def test_released_decoder_and_mae_load_strictly():
    from diffusers import AutoencoderKL

    from asuka.convert import load_mae_checkpoint
    from asuka.flux.loaders import load_flux_decoder_checkpoint
    from asuka.testing import FLUX_VAE

    release = env_path("MISATO_ASUKA_FLUX_RELEASE")
    decoder, report, encoder_report = load_flux_decoder_checkpoint(release / "asuka_decoder.ckpt",
                                                                   AutoencoderKL(**FLUX_VAE))
    assert report.ok and decoder.config.latent_channels == 16
    assert tuple(decoder.config.block_out_channels) == (128, 256, 512, 512) and decoder.config.layers_per_block == 2
    assert encoder_report is None or encoder_report.ok
    assert load_mae_checkpoint(release / "mae_300.pth").config.decoder_embed_dim == 512


def test_assembled_model_inpaints_one_image():
    from PIL import Image

    from baselines import create_method

    folder = env_path("MISATO_ASUKA_FLUX_DIR")
    steps = int(os.environ.get("MISATO_ASUKA_FLUX_STEPS", "4"))
    method = create_method("asuka-flux", model=folder, steps=steps, dtype="fp32")
    image, mask = astronaut_case(512)
    out = method.inpaint_one(image, mask, seed=0)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    reference = os.environ.get("MISATO_ASUKA_FLUX_REFERENCE")
    if reference:
        np.testing.assert_array_equal(out, np.asarray(Image.open(reference).convert("RGB")))
