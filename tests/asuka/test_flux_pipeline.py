"""ASUKAFluxFillPipeline on tiny random FLUX components, against diffusers' FluxFillPipeline."""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxFillPipeline, FluxTransformer2DModel

from asuka.flux.pipeline import ASUKAFluxFillPipeline
from asuka.models import InpaintingDecoder
from asuka.testing import TINY_FLUX_TRANSFORMER, TINY_VAE, get_dummy_flux_components
from tests.helpers import release_mae_example


@pytest.fixture(scope="module")
def components():
    return get_dummy_flux_components(seed=0)


@pytest.fixture(scope="module")
def pipe(components):
    pipe = ASUKAFluxFillPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def example():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((2, 3, 64, 64), dtype=np.float32))
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 8:40, 16:48] = 1
    mask[1, :, 30:60, 0:20] = 1
    return image, mask


def run(pipe, image, mask, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(image, mask, generator=torch.Generator().manual_seed(seed), output_type="pt", **kwargs).images


def test_plain_path_is_bit_identical_to_diffusers_flux_fill(components, example):
    image, mask = example
    torch.manual_seed(5)
    prompt = torch.randn(2, 7, TINY_FLUX_TRANSFORMER["joint_attention_dim"])
    pooled = torch.randn(2, TINY_FLUX_TRANSFORMER["pooled_projection_dim"])
    reference = FluxFillPipeline(scheduler=components["scheduler"], vae=components["vae"], text_encoder=None,
                                 tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                 transformer=components["transformer"])
    reference.set_progress_bar_config(disable=True)
    expected = reference(image=image, mask_image=mask, height=64, width=64, num_inference_steps=3,
                         guidance_scale=30.0, prompt_embeds=prompt, pooled_prompt_embeds=pooled,
                         generator=torch.Generator().manual_seed(7), output_type="pt").images
    ours = ASUKAFluxFillPipeline(scheduler=components["scheduler"], vae=components["vae"],
                                 transformer=components["transformer"])
    ours.set_progress_bar_config(disable=True)
    got = run(ours, image, mask, seed=7, num_inference_steps=3, prompt_embeds=prompt, pooled_prompt_embeds=pooled,
              paste_back=False)
    assert torch.equal(got, expected)
    # the generator list path follows diffusers' per-image draws too
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    expected = reference(image=image, mask_image=mask, height=64, width=64, num_inference_steps=2,
                         prompt_embeds=prompt, pooled_prompt_embeds=pooled, generator=generators,
                         output_type="pt").images
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    got = ours(image, mask, num_inference_steps=2, prompt_embeds=prompt, pooled_prompt_embeds=pooled,
               generator=generators, output_type="pt", paste_back=False).images
    assert torch.equal(got, expected)


def test_condition_weight_zero_is_the_none_feature_path(pipe, components, example):
    image, mask = example
    none = components["none_features"]
    zero = run(pipe, image, mask, condition_weight=0.0)
    direct = run(pipe, image, mask, prompt_embeds=none.txt.detach(), pooled_prompt_embeds=none.vec.detach())
    assert torch.equal(zero, direct)
    assert not torch.equal(run(pipe, image, mask, condition_weight=1.0), zero)


def test_condition_mixing_formula(pipe, components, example):
    image, mask = example
    none = components["none_features"]
    with torch.no_grad():
        prior = components["mae"](image, mask)
        txt = components["alignment_t5"](prior)
        vec = components["alignment_clip"](prior).mean(dim=1)
        got_txt, got_vec = pipe.encode_prior(image, mask, condition_weight=0.5, mae_preprocessing="area")
    torch.testing.assert_close(got_txt, none.txt + 0.5 * (txt - none.txt))
    torch.testing.assert_close(got_vec, none.vec + 0.5 * (vec - none.vec))
    assert got_txt.shape == (2, 16, 32) and got_vec.shape == (2, 16)


def test_asuka_path_is_deterministic_and_keeps_known_pixels(pipe, example):
    image, mask = example
    first, second = run(pipe, image, mask, seed=3), run(pipe, image, mask, seed=3)
    assert torch.equal(first, second)
    known = mask.expand_as(image) == 0
    assert torch.equal(first[known], image[known])
    assert not torch.equal(first, run(pipe, image, mask, seed=4))
    free = run(pipe, image, mask, seed=3, paste_back=False)
    assert not torch.equal(free[known], image[known])
    assert torch.equal(free[~known], first[~known])


def test_empty_mask_returns_the_input(pipe, example):
    image, _ = example
    assert torch.equal(run(pipe, image, torch.zeros(2, 1, 64, 64)), image)


def bad_pipe(components, **replace):
    return ASUKAFluxFillPipeline(**{**components, **replace})


def test_bad_components_and_inputs(components, example):
    image, mask = example
    torch.manual_seed(0)
    plain = FluxTransformer2DModel(**{**TINY_FLUX_TRANSFORMER, "in_channels": 64, "out_channels": None})
    with pytest.raises(ValueError, match="takes 64 input channels; a FLUX.1-Fill transformer .* takes 384"):
        run(bad_pipe(components, transformer=plain), image, mask)
    sd_decoder = InpaintingDecoder.from_vae(AutoencoderKL(**TINY_VAE))
    with pytest.raises(ValueError, match="decodes 4-channel latents but the VAE has 16"):
        run(bad_pipe(components, decoder=sd_decoder), image, mask)
    with pytest.raises(ValueError, match="no none_features"):
        run(bad_pipe(components, none_features=None), image, mask)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        run(bad_pipe(components), image[..., :56], mask[..., :56])
    with pytest.raises(ValueError, match="together"):
        run(bad_pipe(components), image, mask, prompt_embeds=torch.zeros(1, 4, 32))


def test_official_mae_preprocessing_is_the_releases_cv2_resize(pipe, components):
    image, mask, small, small_hole = release_mae_example()
    with torch.no_grad():
        prior = components["mae"](small, small_hole)
        expected = components["alignment_t5"](prior)
        txt, _ = pipe.encode_prior(image, mask, condition_weight=1.0)
        area, _ = pipe.encode_prior(image, mask, condition_weight=1.0, mae_preprocessing="area")
    torch.testing.assert_close(txt, expected)
    assert not torch.allclose(txt, area)
    with pytest.raises(ValueError, match="mae_preprocessing must be one of"):
        run(pipe, image[..., :64, :64], mask[..., :64, :64], mae_preprocessing="bicubic")
