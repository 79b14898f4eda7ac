"""The asuka-flux and flux-fill adapters on tiny random FLUX components."""
import numpy as np
import pytest
import torch

from asuka.flux.pipeline import ASUKAFluxFillPipeline
from asuka.testing import get_dummy_flux_components, write_dummy_flux_fill_folder
from baselines import create_method, run_method
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from tests.helpers import write_misato_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-models")
    ASUKAFluxFillPipeline(**get_dummy_flux_components(seed=0)).save_pretrained(root / "asuka-flux")
    write_dummy_flux_fill_folder(root / "flux-fill")
    from safetensors.torch import save_file

    torch.manual_seed(1)
    save_file({"prompt_embeds": torch.randn(1, 5, 32), "pooled_prompt_embeds": torch.randn(1, 16)},
              root / "empty_prompt.safetensors")
    return root


@pytest.fixture(scope="module")
def asuka_flux(models):
    return create_method("asuka-flux", model=models / "asuka-flux", steps=2, dtype="fp32")


def case(height=72, width=56, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # not multiples of 16: padded, cropped back
    mask = np.zeros((height, width), bool)
    mask[10:50, 5:30] = True
    return image, mask


def test_asuka_flux_contract_batches_and_seeds(asuka_flux):
    image, mask = case()
    out = asuka_flux.inpaint_one(image, mask, seed=7)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])
    # release seeding: every image's noise comes from seed 42, whatever the runner's per-image seed
    np.testing.assert_array_equal(out, asuka_flux.inpaint_one(image, mask, seed=8))
    other, other_mask = case(seed=1)
    batch = asuka_flux.inpaint([other, image], [other_mask, mask], [1, 2])
    # the same noise in any batch; only the kernels' rounding may move a value by one level (AVX-512 CPUs)
    difference = np.abs(batch[1].astype(int) - out.astype(int))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= difference.size // 1000
    np.testing.assert_array_equal(asuka_flux.inpaint_one(image, np.zeros_like(mask), seed=7), image)
    record = asuka_flux.describe()
    assert record["noise_seed"] == 42 and record["guidance"] == 30.0 and record["condition_weight"] == 0.5
    assert {"transformer", "mae", "alignment_t5", "none_features", "decoder"} <= {
        key.split("/")[0] for key in record["weights_sha256"]}


def test_official_quantisation_truncates_without_paste_back(models, asuka_flux):
    image, mask = case()
    official = create_method("asuka-flux", model=models / "asuka-flux", steps=2, dtype="fp32",
                             official_quantisation=True)
    free = ASUKAFluxFillPipeline.from_pretrained(models / "asuka-flux", local_files_only=True)
    free.set_progress_bar_config(disable=True)
    padded = np.pad(image, ((0, 8), (0, 8), (0, 0)), mode="symmetric")
    hole = np.pad(mask, ((0, 8), (0, 8)))
    expected = free(padded, hole, num_inference_steps=2, generator=[torch.Generator().manual_seed(42)],
                    output_type="np", paste_back=False).images[0][:72, :56]
    got = official.inpaint_one(image, mask, seed=0)
    np.testing.assert_array_equal(got, np.clip(expected * 255, 0, 255).astype(np.uint8))
    assert official.describe()["official_quantisation"] and not official.describe()["paste_back"]
    with pytest.raises(MisatoError, match="does not paste back"):
        create_method("asuka-flux", model=models / "asuka-flux", official_quantisation=True, paste_back=True)


def test_flux_fill_and_cli_run(tmp_path, models, capsys):
    data = write_misato_folder(tmp_path / "data", n=2, size=48)
    out = tmp_path / "pred"
    code = main(["inpaint", "--method", "flux-fill", "--model", str(models / "flux-fill"), "--data", str(data),
                 "--out", str(out), "--steps", "2", "--dtype", "fp32",
                 "--prompt-embeds", str(models / "empty_prompt.safetensors")])
    assert code == 0, capsys.readouterr().err
    for name, path in list_images(out).items():
        hole = read_mask(data / "mask" / f"{name}.png")
        np.testing.assert_array_equal(read_image(path)[~hole], read_image(data / "image" / f"{name}.png")[~hole])
    fill = create_method("flux-fill", model=models / "flux-fill", steps=2, dtype="fp32",
                         prompt_embeds=models / "empty_prompt.safetensors")
    record = run_method(fill, data, tmp_path / "again", seed=0, progress=False)
    assert record["method"] == "flux-fill" and record["condition_weight"] is None
    assert (tmp_path / "again" / "0000.png").read_bytes() == next(iter(sorted(list_images(out).values()))).read_bytes()


def test_bad_options(models):
    with pytest.raises(MisatoError, match="--prompt-embeds FILE"):
        create_method("flux-fill", model=models / "flux-fill")
    with pytest.raises(MisatoError, match="missing component"):
        create_method("asuka-flux", model=models / "flux-fill")
    with pytest.raises(MisatoError, match="--dtype must be one of bf16, fp16, fp32"):
        create_method("asuka-flux", model=models / "asuka-flux", dtype="float64")
    with pytest.raises(MisatoError, match="needs --device cuda"):
        create_method("asuka-flux", model=models / "asuka-flux", cpu_offload=True)


def test_release_dtype_bf16_runs(models):
    method = create_method("asuka-flux", model=models / "asuka-flux", steps=1)
    assert method.describe()["dtype"] == "bf16" and method.pipe.transformer.dtype == torch.bfloat16
    assert method.pipe.mae.dtype == torch.float32  # MAEPrior normalises in float32
    image, mask = case()
    out = method.inpaint_one(image, mask, seed=0)
    np.testing.assert_array_equal(out[~mask], image[~mask])
