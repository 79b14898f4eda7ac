import json

import numpy as np
import pytest
import torch

from asuka.assemble import assemble
from asuka.models import MAEPrior
from asuka.sd_variants import save_prompt_embeds
from asuka.testing import TINY_MAE, write_dummy_sd_inpaint_folder
from baselines import create_method, run_method
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from misato.weights import file_sha256
from tests.helpers import write_misato_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    sd = write_dummy_sd_inpaint_folder(root / "sd")
    torch.manual_seed(0)
    torch.save({"model": MAEPrior(**{**TINY_MAE, "num_heads": 1, "decoder_num_heads": 1}).state_dict()},
               root / "mae.pth")
    assemble(sd, root / "asuka", mae=root / "mae.pth", decoder="none")
    save_prompt_embeds(root / "prompt.safetensors", torch.randn(4, 32))
    return root


@pytest.fixture(scope="module")
def asuka_method(models):
    return create_method("asuka", model=models / "asuka", steps=2)


def test_asuka_adapter_contract(asuka_method):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 52, 3), dtype=np.uint8)  # not a multiple of 8: padded and cropped back
    mask = np.zeros((60, 52), bool)
    mask[10:40, 5:30] = True
    out = asuka_method.inpaint_one(image, mask, seed=7)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])  # True = hole: known pixels are kept
    assert not np.array_equal(out[mask], image[mask])
    np.testing.assert_array_equal(out, asuka_method.inpaint_one(image, mask, seed=7))
    np.testing.assert_array_equal(asuka_method.inpaint_one(image, np.zeros_like(mask), seed=7), image)


def test_asuka_describe_records_weight_hashes(models, asuka_method):
    record = asuka_method.describe()
    assert record["method"] == "asuka" and record["steps"] == 2 and record["decoder"] == "inpainting"
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert record["weights_sha256"][unet] == file_sha256(models / "asuka" / unet)
    assert {"mae", "alignment", "decoder", "vae"} <= {key.split("/")[0] for key in record["weights_sha256"]}


def test_runner_with_asuka_resumes_identically(tmp_path, asuka_method):
    data = write_misato_folder(tmp_path / "data", n=3, size=48)
    out = tmp_path / "pred"
    record = run_method(asuka_method, data, out, seed=3, progress=False)
    assert record["complete"] and "weights_sha256" in json.loads((out / "run.json").read_text())
    first = (out / "0001.png").read_bytes()
    (out / "0001.png").unlink()
    (out / "run.json").write_text(json.dumps({**record, "complete": False}))
    run_method(asuka_method, data, out, seed=3, resume=True, progress=False)
    assert (out / "0001.png").read_bytes() == first
    for name, path in list_images(out).items():
        hole = read_mask(data / "mask" / f"{name}.png")
        np.testing.assert_array_equal(read_image(path)[~hole], read_image(data / "image" / f"{name}.png")[~hole])


@pytest.mark.parametrize("method", ["sd", "sd-text", "sd-prompt"])
def test_sd_variants(models, method):
    options = {"prompt_embeds": models / "prompt.safetensors"} if method == "sd-prompt" else {}
    adapter = create_method(method, model=models / "sd", steps=2, **options)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    out = adapter.inpaint_one(image, mask, seed=0)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    record = adapter.describe()
    assert record["decoder"] == "kl-vae"
    assert record["prompt"] == {"sd": "", "sd-text": "background", "sd-prompt": None}[method]
    if method != "sd-prompt":
        assert "text_encoder/model.safetensors" in record["weights_sha256"]


def test_sd_text_prompts_differ(models):
    image = np.full((32, 32, 3), 120, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:28, 4:28] = True
    empty = create_method("sd", model=models / "sd", steps=2).inpaint_one(image, mask, seed=0)
    text = create_method("sd-text", model=models / "sd", steps=2).inpaint_one(image, mask, seed=0)
    assert not np.array_equal(empty, text)


def test_bad_models(tmp_path, models):
    with pytest.raises(MisatoError, match="needs --model"):
        create_method("asuka")
    with pytest.raises(MisatoError, match=r"missing component\(s\) mae, alignment"):
        create_method("asuka", model=models / "sd")
    with pytest.raises(MisatoError, match="no such folder"):
        create_method("sd", model=tmp_path / "absent")
    with pytest.raises(MisatoError, match="--guidance-scale applies to sd and sd-text"):
        create_method("asuka", model=models / "asuka", guidance_scale=7.5)
    with pytest.raises(MisatoError, match="--prompt-embeds FILE is required"):
        create_method("sd-prompt", model=models / "sd")
    with pytest.raises(MisatoError, match="RGB uint8"):
        create_method("sd-prompt", model=models / "sd", prompt_embeds=models / "prompt.safetensors").inpaint_one(
            np.zeros((32, 32, 4), np.uint8), np.ones((32, 32), bool), seed=0)


def test_cli_inpaint_and_assemble(tmp_path, models, capsys):
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    assert main(["asuka", "assemble", "--sd", str(models / "sd"), "--out", str(tmp_path / "asuka"),
                 "--mae", str(models / "mae.pth")]) == 0
    assert "freshly initialised" in capsys.readouterr().out
    args = ["inpaint", "--method", "asuka", "--model", str(tmp_path / "asuka"), "--data", str(data),
            "--out", str(tmp_path / "pred"), "--steps", "1", "--seed", "4", "--limit", "1"]
    assert main(args) == 0
    assert sorted(list_images(tmp_path / "pred")) == ["0000"]
    record = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert record["seed"] == 4 and record["steps"] == 1 and record["limit"] == 1
    assert main(args) == 2  # a finished run is not overwritten
    assert "--overwrite" in capsys.readouterr().err
    assert main(["inpaint", "--method", "telea", "--data", str(data), "--out", str(tmp_path / "telea")]) == 0
    assert main(["inpaint", "--method", "telea", "--model", "x", "--data", str(data), "--out",
                 str(tmp_path / "t2")]) == 2
    assert "takes no --model" in capsys.readouterr().err


def test_sd_text_with_guidance_uses_the_empty_prompt_as_negative(models):
    adapter = create_method("sd-text", model=models / "sd", steps=1, guidance_scale=5.0)
    assert adapter.negative_prompt_embeds.shape == adapter.prompt_embeds.shape
    image = np.full((32, 32, 3), 90, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:20, 4:20] = True
    assert adapter.inpaint_one(image, mask, seed=0).shape == image.shape


def test_registering_the_adapters_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, baselines, asuka; names = baselines.available_methods(); "
            "assert {'asuka', 'sd', 'sd-text', 'sd-prompt', 'telea'} <= set(names), names; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unusable_device_is_a_clear_error(tmp_path):
    import torch

    from baselines import create_method
    from misato.errors import MisatoError

    with pytest.raises(MisatoError, match="--device must be"):
        create_method("sd", model=tmp_path, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(MisatoError, match="no CUDA device"):
            create_method("sd", model=tmp_path, device="cuda")
