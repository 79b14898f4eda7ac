import numpy as np
import PIL.Image
import pytest
import torch

from asuka.pipeline import ASUKAInpaintPipeline
from asuka.sd_variants import encode_prompt, load_prompt_embeds, save_prompt_embeds
from asuka.testing import get_dummy_components, write_dummy_sd_inpaint_folder
from tests.helpers import release_mae_example, smooth_image


@pytest.fixture(scope="module")
def pipe():
    pipeline = ASUKAInpaintPipeline(**get_dummy_components())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return write_dummy_sd_inpaint_folder(tmp_path_factory.mktemp("sd") / "sd")


@pytest.fixture()
def example():
    rng = np.random.default_rng(0)
    image = smooth_image(rng, 64)
    mask = np.zeros((64, 64), bool)
    mask[12:44, 20:52] = True
    return image, mask


def run(pipe, image, mask, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("output_type", "np")
    return pipe(image, mask, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_runs_is_deterministic_and_keeps_known_pixels(pipe, example):
    image, mask = example
    first, second = run(pipe, image, mask), run(pipe, image, mask)
    assert first.shape == (1, 64, 64, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, run(pipe, image, mask, seed=1))
    as_uint8 = np.rint(first[0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(as_uint8[~mask], image[~mask])
    assert not np.array_equal(as_uint8[mask], image[mask])


def test_without_paste_back_known_pixels_come_from_the_decoder(pipe, example):
    image, mask = example
    out = np.rint(run(pipe, image, mask, paste_back=False)[0] * 255).astype(np.uint8)
    assert not np.array_equal(out[~mask], image[~mask])


def test_output_types(pipe, example):
    image, mask = example
    pil = run(pipe, PIL.Image.fromarray(image), PIL.Image.fromarray(mask.astype(np.uint8) * 255), output_type="pil")
    np.testing.assert_array_equal(np.asarray(pil[0]), np.rint(run(pipe, image, mask)[0] * 255).astype(np.uint8))
    tensor = run(pipe, torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0, torch.from_numpy(mask)[None, None],
                 output_type="pt")
    assert tensor.shape == (1, 3, 64, 64)
    assert run(pipe, image, mask, output_type="latent").shape == (1, 4, 8, 8)


def test_empty_mask_returns_the_input_and_full_mask_works(pipe, example):
    image, _ = example
    empty = run(pipe, image, np.zeros((64, 64), bool))
    np.testing.assert_array_equal(np.rint(empty[0] * 255).astype(np.uint8), image)
    full = run(pipe, image, np.ones((64, 64), bool))
    assert np.isfinite(full).all()


def test_batch_with_an_empty_mask(pipe, example):
    image, mask = example
    out = run(pipe, np.stack([image, image]), np.stack([mask, np.zeros_like(mask)]))
    np.testing.assert_array_equal(np.rint(out[1] * 255).astype(np.uint8), image)


@pytest.mark.parametrize(
    "image, mask, message",
    [
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 56), bool), "mask_image is 56x64"),
        (np.zeros((60, 64, 3), np.uint8), np.ones((60, 64), bool), "not a multiple of 8"),
        (PIL.Image.new("RGBA", (64, 64)), np.ones((64, 64), bool), "alpha channel"),
        (np.zeros((64, 64, 4), np.uint8), np.ones((64, 64), bool), r"\[H, W, 3\]"),
        (np.zeros((64, 64, 3), np.uint8), PIL.Image.new("RGB", (64, 64)), "single-channel"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), "single-channel"),
    ],
)
def test_bad_inputs(pipe, image, mask, message):
    with pytest.raises(ValueError, match=message):
        pipe(image, mask, num_inference_steps=1)


def test_mae_input_is_prepared_as_the_release_does_by_default(pipe):
    image, mask, small, small_hole = release_mae_example()
    with torch.no_grad():
        expected = pipe.alignment(pipe.mae(small, small_hole))
        official = pipe.encode_prior(image, mask)
        area = pipe.encode_prior(image, mask, mae_preprocessing="area")
        area_expected = pipe.alignment(pipe.mae(image, mask))
    torch.testing.assert_close(official, expected)
    torch.testing.assert_close(area, area_expected)
    assert not torch.allclose(official, area)
    with pytest.raises(ValueError, match="mae_preprocessing must be one of"):
        run(pipe, image[..., :64, :64], mask[..., :64, :64], mae_preprocessing="bicubic")


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 0.02), (torch.bfloat16, 0.1)])
def test_half_precision_pipeline_runs_close_to_float32(pipe, example, dtype, tolerance):
    image, mask = example
    half = ASUKAInpaintPipeline(**get_dummy_components()).to(torch_dtype=dtype)
    half.set_progress_bar_config(disable=True)
    reference, result = run(pipe, image, mask)[0], run(half, image, mask)[0]
    assert result.dtype == np.float32 and np.isfinite(result).all()
    assert np.array_equal(result[~mask], reference[~mask])
    assert np.abs(result - reference).max() < tolerance


def test_bad_options(pipe, example):
    image, mask = example
    with pytest.raises(ValueError, match="strength"):
        pipe(image, mask, strength=0.0)
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        pipe(image, mask, guidance_scale=5.0)


def test_strength_and_guidance_paths_run(pipe, example):
    image, mask = example
    default = run(pipe, image, mask)
    partial = run(pipe, image, mask, strength=0.5, num_inference_steps=4)
    assert np.isfinite(partial).all() and not np.array_equal(partial, default)
    null = torch.zeros(1, 16, 32)
    guided = run(pipe, image, mask, guidance_scale=3.0, negative_prompt_embeds=null)
    assert np.isfinite(guided).all() and not np.array_equal(guided, default)
    halved = run(pipe, image, mask, condition_weight=0.5)
    assert not np.array_equal(halved, run(pipe, image, mask))


def test_save_pretrained_roundtrip(tmp_path, pipe, example):
    image, mask = example
    pipe.save_pretrained(tmp_path / "asuka")
    loaded = ASUKAInpaintPipeline.from_pretrained(tmp_path / "asuka", local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.mae).__name__ == "MAEPrior" and type(loaded.decoder).__name__ == "InpaintingDecoder"
    np.testing.assert_allclose(run(loaded, image, mask), run(pipe, image, mask), atol=1e-5)


def test_sd_path_equals_diffusers_inpaint_pipeline(sd_folder, example):
    """The SD baselines run through ASUKA's code path; without decoder and paste-back it is diffusers' pipeline."""
    from diffusers import StableDiffusionInpaintPipeline

    image, mask = example
    reference = StableDiffusionInpaintPipeline.from_pretrained(sd_folder, local_files_only=True, safety_checker=None,
                                                               requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    expected = reference(prompt="background", image=PIL.Image.fromarray(image),
                         mask_image=PIL.Image.fromarray(mask.astype(np.uint8) * 255), height=64, width=64,
                         num_inference_steps=3, guidance_scale=1.0, generator=torch.Generator().manual_seed(3),
                         output_type="np").images
    ours = ASUKAInpaintPipeline.from_sd_inpaint(sd_folder)
    ours.set_progress_bar_config(disable=True)
    got = run(ours, image, mask, seed=3, num_inference_steps=3, paste_back=False,
              prompt_embeds=encode_prompt(sd_folder, "background"))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="prompt_embeds"):
        ours(image, mask, num_inference_steps=1)


def test_prompt_embeds_file_roundtrip(tmp_path):
    embeds = torch.randn(5, 32)
    save_prompt_embeds(tmp_path / "prompt.safetensors", embeds)
    torch.testing.assert_close(load_prompt_embeds(tmp_path / "prompt.safetensors"), embeds[None])


def test_hole_pixels_never_reach_the_output(pipe, example):
    image, mask = example
    other = image.copy()
    other[mask] = np.random.default_rng(5).integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    np.testing.assert_array_equal(run(pipe, image, mask), run(pipe, other, mask))


def test_tensor_masks_follow_the_one_binarisation_rule():
    """uint8 tensors binarise at 128 like arrays and files; float tensors outside [0, 1] are refused."""
    import torch

    from asuka.pipeline import mask_to_tensor
    from misato.errors import MisatoError

    values = torch.tensor([[0, 1, 127, 255]], dtype=torch.uint8)
    assert mask_to_tensor(values).flatten().tolist() == [0.0, 0.0, 0.0, 1.0]
    assert mask_to_tensor(values).flatten().tolist() == mask_to_tensor(values.numpy()).flatten().tolist()
    with pytest.raises(MisatoError, match=r"\[0, 1\]"):
        mask_to_tensor(torch.tensor([[-3.0, 7.0]]))
