import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file

from asuka.assemble import assemble
from asuka.models import InpaintingDecoder
from asuka.pipeline import ASUKAInpaintPipeline
from asuka.train import config as train_config
from asuka.train.decoder import DecoderStage, load_initial_decoder
from asuka.train.loop import read_train_checkpoint, stage_parser, train
from misato.errors import MisatoError
from misato.reproducibility import seeded
from tests.asuka.test_decoder import to_ldm_layout
from tests.asuka.train.conftest import common_flags
from tests.asuka.train.test_decoder_losses import alexnet_file

TINY_LOSS = {"lpips-net": "alex", "disc-channels": 8, "disc-layers": 2}


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    return alexnet_file(tmp_path_factory.mktemp("alexnet"))


def flags(inputs, out: Path, alexnet: Path, steps: int = 3, **extra) -> list[str]:
    """A 32-px decoder run on the shared tiny inputs (asuka-train masks, tiny SD folder, LPIPS-alex)."""
    return common_flags(inputs, out, steps=steps, resolution=32, sd=inputs["sd"], **{"lpips-backbone": alexnet},
                        **{**TINY_LOSS, **extra})


def parse(argv: list[str]):
    return train_config.parse_arguments(stage_parser(DecoderStage), argv)


class Recording(DecoderStage):
    """The stage, keeping its instance and its initial trainable weights for the test to compare."""

    instances: list[DecoderStage] = []

    def __init__(self, config):
        super().__init__(config)
        self.initial = {name: {k: v.clone() for k, v in module.state_dict().items()}
                        for name, module in self.trainable.items()}
        Recording.instances.append(self)


def log_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_trains_only_the_decoder_and_discriminator_and_the_output_assembles(train_inputs, alexnet, tmp_path):
    sd = train_inputs["sd"]
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", local_files_only=True)
    out = tmp_path / "run"
    Recording.instances.clear()
    record = train(Recording, parse(flags(train_inputs, out, alexnet, steps=3)))
    assert record["complete"] and record["steps"] == 3 and record["outputs"] == {"decoder": "decoder"}
    stage = Recording.instances[0]

    for name, module, fresh in (("vae", stage.frozen["vae"], vae),
                                ("unet", stage.frozen["unet"],
                                 UNet2DConditionModel.from_pretrained(sd, subfolder="unet", local_files_only=True))):
        for key, value in fresh.state_dict().items():
            assert torch.equal(module.state_dict()[key], value), f"{name}.{key} changed"
    for key, value in InpaintingDecoder.from_vae(vae).decoder.state_dict().items():  # initialised from the SD VAE
        assert torch.equal(stage.initial["decoder"]["decoder." + key], value)
    trained = InpaintingDecoder.from_pretrained(out / "decoder", local_files_only=True)
    changed = {key for key, value in stage.initial["decoder"].items() if not torch.equal(trained.state_dict()[key], value)}
    assert not any(key.startswith("post_quant_conv.") for key in changed)  # frozen, as in Asymmetric VQGAN
    assert any(key.startswith("condition_encoder.") for key in changed)
    assert any(key.startswith("decoder.up_blocks.") for key in changed)
    discriminator = stage.unwrapped("discriminator").state_dict()
    assert all(not torch.equal(discriminator[key], value) for key, value in stage.initial["discriminator"].items()
               if key.endswith("weight"))

    rows = log_rows(out)
    assert [row["step"] for row in rows] == ["1", "2", "3"]
    for row in rows:
        for key in ("decoder/l1", "decoder/lpips", "decoder/g", "decoder/adaptive_weight", "discriminator/d"):
            assert np.isfinite(float(row[key])), key
    assert {float(row["decoder/latent_aug"]) for row in rows} <= {0.0, 0.5, 1.0}
    assert (out / "samples" / "step-00000003.png").is_file()

    assembled = tmp_path / "asuka"
    result = assemble(sd, assembled, mae=train_inputs["mae"], decoder=out)
    assert result["components"]["decoder"]["source"] == str(out)
    pipe = ASUKAInpaintPipeline.from_pretrained(assembled, local_files_only=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(pipe.decoder.state_dict()[key], value)
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:40] = True
    result = pipe(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    painted = result.images[0]
    assert painted.shape == (64, 64, 3) and np.isfinite(painted).all()
    np.testing.assert_allclose(painted[~mask], image[~mask] / 255.0, atol=1 / 255)  # known pixels kept
    assert np.abs(painted[mask] - image[mask] / 255.0).mean() > 0.01


def test_resume_after_a_stop_equals_the_uninterrupted_run(train_inputs, alexnet, tmp_path):
    extra = {"disc-start": 1, "checkpoint-every": 2}  # the discriminator joins at step 2, across a checkpoint
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(DecoderStage, parse(flags(train_inputs, whole, alexnet, steps=4, **extra)))
    stopped = train(DecoderStage, parse(flags(train_inputs, parts, alexnet, steps=4, **extra) + ["--stop-at-step", "3"]))
    assert not stopped["complete"] and not (parts / "decoder").exists()
    train(DecoderStage, parse(flags(train_inputs, parts, alexnet, steps=4, **extra) + ["--resume"]))

    ours = load_file(parts / "decoder" / "diffusion_pytorch_model.safetensors")
    reference = load_file(whole / "decoder" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == reference.keys()
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key
    last = {name: read_train_checkpoint(folder / "checkpoints" / "step-00000004.pt")["modules"]["discriminator"]
            for name, folder in (("whole", whole), ("parts", parts))}
    for key, value in last["whole"].items():
        assert torch.equal(last["parts"][key], value), key
    timing = ("step_time", "data_time", "images_per_s")
    def losses(out):
        return [{k: v for k, v in row.items() if k not in timing} for row in log_rows(out)]

    assert losses(parts) == losses(whole) and len(losses(whole)) == 4


def build_stage(inputs, alexnet, tmp_path, **extra) -> DecoderStage:
    config = train_config.resolved_config(parse(flags(inputs, tmp_path / "unused", alexnet, **extra)))
    with seeded(config["seed"]):
        stage = DecoderStage(config)
    for module in stage.frozen.values():
        module.requires_grad_(False).eval()
    stage._optimisers = stage.optimisers()
    return stage


def fixed_batch(size: int = 32) -> dict:
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([yy, xx, 0.5 * (yy + xx)])[None].repeat(2, 1, 1, 1)
    image = (image + 0.05 * torch.rand(image.shape, generator=generator)).clamp(0, 1)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 8:24, 4:20] = 1
    mask[1, :, 0:16, 16:32] = 1
    return {"image": image, "mask": mask, "seed": torch.tensor([3, 4]), "position": torch.tensor([0, 1])}


def test_the_reconstruction_loss_decreases_on_a_fixed_batch(train_inputs, alexnet, tmp_path):
    stage = build_stage(train_inputs, alexnet, tmp_path, augment="colour", lr=1e-3, **{"disc-start": 20})
    batch = fixed_batch()
    (optimiser,) = [o for o in stage._optimisers if o.name == "decoder"]
    losses = []
    for step in range(20):
        assert stage.phases(step) == ["decoder"]
        result = stage.training_step(batch, step, "decoder")
        result["loss"].backward()
        optimiser.optimizer.step()
        optimiser.optimizer.zero_grad(set_to_none=True)
        losses.append(float(result["rec"]))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert stage.phases(20) == ["decoder", "discriminator"]


def test_table4_switches_load_only_what_they_need(train_inputs, alexnet, tmp_path):
    no_unet = tmp_path / "sd"
    shutil.copytree(train_inputs["sd"] / "vae", no_unet / "vae")
    none = build_stage({**train_inputs, "sd": no_unet}, alexnet, tmp_path, augment="none")
    assert none.jitter is None and "unet" not in none.frozen
    batch = fixed_batch()
    clean, _ = none.decoder_inputs(batch)
    again, _ = none.decoder_inputs(batch)
    assert torch.equal(clean, again)  # the posterior sample comes from the per-sample seeds
    colour = build_stage({**train_inputs, "sd": no_unet}, alexnet, tmp_path, augment="colour")
    jittered, info = colour.decoder_inputs(batch)
    assert colour.jitter is not None and "latent_aug" not in info and not torch.equal(jittered, clean)
    with pytest.raises(MisatoError, match="missing unet/, scheduler/"):
        build_stage({**train_inputs, "sd": no_unet}, alexnet, tmp_path, augment="colour+latent")
    full = build_stage(train_inputs, alexnet, tmp_path, **{"latent-aug-p": 1.0})
    augmented, info = full.decoder_inputs(batch)
    assert float(info["latent_aug"]) == 1.0 and not torch.allclose(augmented, jittered)


def test_initialisation_from_an_asymmetric_vqgan_checkpoint(train_inputs, tmp_path):
    vae = AutoencoderKL.from_pretrained(train_inputs["sd"], subfolder="vae", local_files_only=True)
    with seeded(4):
        asymmetric = InpaintingDecoder.from_vae(vae, asymmetric_vqgan=True).eval()
    torch.save({"state_dict": to_ldm_layout(asymmetric)}, tmp_path / "asymmetric.ckpt")
    widened = load_initial_decoder(str(tmp_path / "asymmetric.ckpt"), vae, "asuka").eval()
    assert not widened.config.asymmetric_vqgan
    assert widened.condition_encoder.layers[0].weight.shape[1] == 4
    z, image = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 8:32] = 1  # on the 8-px grid: nearest and "any hole" downsampling agree
    with torch.no_grad():
        torch.testing.assert_close(widened(z, image, mask), asymmetric(z, image, mask))
    kept = load_initial_decoder(str(tmp_path / "asymmetric.ckpt"), vae, "asymmetric-vqgan")
    assert kept.config.asymmetric_vqgan
    widened.save_pretrained(tmp_path / "asuka-decoder")
    with pytest.raises(MisatoError, match="cannot become"):
        load_initial_decoder(str(tmp_path / "asuka-decoder"), vae, "asymmetric-vqgan")
    reloaded = load_initial_decoder(str(tmp_path / "asuka-decoder"), vae, "asuka")
    for key, value in widened.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)


def test_user_mistakes_are_one_line_errors(train_inputs, alexnet, tmp_path):
    with pytest.raises(MisatoError, match="--sd is required"):
        DecoderStage(train_config.resolved_config(parse(common_flags(train_inputs, tmp_path / "o"))))
    with pytest.raises(MisatoError, match="--sd .*missing vae/"):
        build_stage({**train_inputs, "sd": tmp_path}, alexnet, tmp_path)
    with pytest.raises(MisatoError, match="--init .*no such file"):
        build_stage(train_inputs, alexnet, tmp_path, init=tmp_path / "absent.ckpt")
    with pytest.raises(MisatoError, match="--latent-timesteps 0 1000"):
        build_stage(train_inputs, alexnet, tmp_path, **{"latent-timesteps": [0, 1000]})
    with pytest.raises(MisatoError, match="--augment"):
        parse(flags(train_inputs, tmp_path / "o", alexnet, augment="latent"))
