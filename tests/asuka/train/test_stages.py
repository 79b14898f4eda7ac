"""The mae, alignment and sd-prompt stages on tiny components: training, learning signal, frozen parts, exact
resume, outputs that assemble and inpaint, and bad input."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asuka.models import MAEPrior
from asuka.train import data as train_data
from asuka.train.alignment import AlignmentStage, full_prior_probability
from asuka.train.config import parse_arguments, resolved_config
from asuka.train.loop import read_train_checkpoint, run, stage_parser
from asuka.train.mae import MAEStage, grow_token_mask
from asuka.train.sd_prompt import SDPromptStage
from misato.errors import MisatoError
from misato.reproducibility import seeded
from tests.asuka.train.conftest import common_flags

STAGE_FLAGS = {
    MAEStage: lambda inputs: ["--mae-init", str(inputs["mae"])],
    AlignmentStage: lambda inputs: ["--mae", str(inputs["mae"]), "--sd", str(inputs["sd"])],
    SDPromptStage: lambda inputs: ["--sd", str(inputs["sd"])],
}


def train_stage(stage_cls, inputs, out, steps=3, extra=(), **flags):
    flags = common_flags(inputs, out, steps=steps, **flags)
    return run(stage_cls, flags + STAGE_FLAGS[stage_cls](inputs) + list(extra))


def build_stage(stage_cls, inputs, tmp_path, **flags):
    """The stage object as the loop builds it (seeded), with its optimisers, for in-process checks."""
    args = parse_arguments(stage_parser(stage_cls), common_flags(inputs, tmp_path / "unused", **flags)
                           + STAGE_FLAGS[stage_cls](inputs))
    config = resolved_config(args)
    with seeded(config["seed"]):
        stage = stage_cls(config)
    for module in stage.frozen.values():
        module.requires_grad_(False).eval()
    stage._optimisers = stage.optimisers()
    source = train_data.open_source(config["data"])
    from misato.masks import make_generator

    dataset = train_data.TrainingImages(source, 64, 0, make_generator("asuka-train", 64, objects=config["objects"]))
    batch = train_data.collate([dataset[(p, 0)] for p in range(2)])
    return stage, batch


@pytest.fixture(scope="module")
def runs(train_inputs, tmp_path_factory):
    """Uninterrupted 5-step runs of each stage (the references of the resume tests)."""
    root = tmp_path_factory.mktemp("runs")
    return {cls: (train_stage(cls, train_inputs, root / cls.name, steps=5), root / cls.name) for cls in STAGE_FLAGS}


def test_every_stage_trains_and_writes_its_component(runs, train_inputs):
    record, out = runs[MAEStage]
    assert record["complete"] and record["steps"] == 5 and record["component"] == "mae"
    assert json.loads((out / "train.json").read_text())["data"]["images"] == 6
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {"loss", "lr", "step_time", "data_time", "images_per_s"} <= set(rows[0])
    trained = MAEPrior.from_pretrained(out / "mae")
    start = torch.load(train_inputs["mae"], weights_only=True)["model"]
    assert not torch.equal(trained.state_dict()["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    final = read_train_checkpoint(sorted((out / "checkpoints").glob("*.pt"))[-1])
    for key, value in trained.state_dict().items():
        assert torch.equal(final["modules"]["mae"]["mae." + key], value)
    assert (runs[AlignmentStage][1] / "alignment" / "config.json").is_file()
    embeds = load_file(runs[SDPromptStage][1] / "prompt_embeds.safetensors")["prompt_embeds"]
    assert embeds.shape == (1, 77, 32)


@pytest.mark.parametrize("stage_cls, lr, ratio", [(MAEStage, 3e-3, 0.8), (AlignmentStage, 3e-2, 0.97),
                                                  (SDPromptStage, 0.3, 0.95)])
def test_loss_decreases_on_a_fixed_batch(stage_cls, lr, ratio, train_inputs, tmp_path):
    """20 updates on one batch (same noise and timesteps each time). Through the frozen tiny UNet (one
    cross-attention block) the condition explains only a few per cent of the ε-MSE, hence the milder ratios."""
    stage, batch = build_stage(stage_cls, train_inputs, tmp_path, lr=lr, **{"max-grad-norm": 0, "warmup-steps": 0,
                                                                         "lr-schedule": "constant"})
    optimiser = stage._optimisers[0]
    losses = []
    for step in range(20):
        loss = stage.training_step(batch, 5000, optimiser.name)["loss"]
        loss.backward()
        optimiser.optimizer.step()
        optimiser.optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert losses[-1] < ratio * losses[0], losses
    assert all(later < earlier for earlier, later in zip(losses[::5], losses[5::5])), losses


@pytest.mark.parametrize("stage_cls", [AlignmentStage, SDPromptStage])
def test_only_the_trained_parameters_change(stage_cls, train_inputs, tmp_path):
    stage, batch = build_stage(stage_cls, train_inputs, tmp_path, lr=1e-2, **{"warmup-steps": 0})
    frozen = {name: {k: v.clone() for k, v in module.state_dict().items()} for name, module in stage.frozen.items()}
    trained = {k: v.clone() for m in stage.trainable.values() for k, v in m.state_dict().items()}
    optimiser = stage._optimisers[0]
    for step in range(3):
        stage.training_step(batch, step, optimiser.name)["loss"].backward()
        for module in stage.frozen.values():
            assert all(p.grad is None and not p.requires_grad for p in module.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in stage.trainable.values()
                   for p in m.parameters())
        optimiser.optimizer.step()
        optimiser.optimizer.zero_grad(set_to_none=True)
    for name, module in stage.frozen.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, frozen[name][key]), f"{name}.{key} changed"
    after = {k: v for m in stage.trainable.values() for k, v in m.state_dict().items()}
    assert all(not torch.equal(after[k], v) for k, v in trained.items() if v.is_floating_point() and v.numel() > 1)


def _same_outputs(a, b, stage_cls):
    if stage_cls is SDPromptStage:
        files = ["prompt_embeds.safetensors"]
    else:
        files = [f"{stage_cls.component}/diffusion_pytorch_model.safetensors"]
    for name in files:
        first, second = load_file(a / name), load_file(b / name)
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("stage_cls", [AlignmentStage, SDPromptStage])
def test_stop_and_resume_equals_an_uninterrupted_run(stage_cls, runs, train_inputs, tmp_path):
    reference, reference_out = runs[stage_cls]
    stopped = train_stage(stage_cls, train_inputs, tmp_path / "run", steps=5, extra=["--stop-at-step", "3"])
    assert not stopped["complete"] and stopped["steps"] == 3
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == ["step-00000003.pt"]
    resumed = train_stage(stage_cls, train_inputs, tmp_path / "run", steps=5, extra=["--resume"])
    assert resumed["final_losses"] == reference["final_losses"]
    _same_outputs(tmp_path / "run", reference_out, stage_cls)
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 6


def test_kill_by_an_exception_then_resume_equals_an_uninterrupted_run(runs, train_inputs, tmp_path, monkeypatch):
    reference, reference_out = runs[MAEStage]
    original = MAEStage.training_step

    def dies_at_step_3(self, batch, step, phase):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return original(self, batch, step, phase)

    monkeypatch.setattr(MAEStage, "training_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_stage(MAEStage, train_inputs, tmp_path / "run", steps=5, **{"checkpoint-every": 2})
    monkeypatch.setattr(MAEStage, "training_step", original)
    resumed = train_stage(MAEStage, train_inputs, tmp_path / "run", steps=5, extra=["--resume"],
                          **{"checkpoint-every": 2})
    assert resumed["final_losses"] == reference["final_losses"]
    trained = MAEPrior.from_pretrained(tmp_path / "run" / "mae")
    expected = MAEPrior.from_pretrained(reference_out / "mae")
    for key, value in expected.state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert kept == ["step-00000002.pt", "step-00000004.pt", "step-00000005.pt"]


def test_resume_with_another_config_or_stage_is_refused(train_inputs, tmp_path):
    train_stage(MAEStage, train_inputs, tmp_path / "run", steps=4, extra=["--stop-at-step", "1"])
    with pytest.raises(MisatoError, match=r"differing keys: lr \(0.0001 → 0.5\); max_steps \(4 → 5\)"):
        train_stage(MAEStage, train_inputs, tmp_path / "run", steps=5, extra=["--resume", "--lr", "0.5"])
    with pytest.raises(MisatoError, match="holds a training run of stage mae, not alignment"):
        train_stage(AlignmentStage, train_inputs, tmp_path / "run", extra=["--resume"])
    with pytest.raises(MisatoError, match="unfinished training run; pass --resume"):
        train_stage(MAEStage, train_inputs, tmp_path / "run", steps=4)


def test_outputs_assemble_and_inpaint(runs, train_inputs, tmp_path):
    from asuka.assemble import assemble
    from asuka.pipeline import ASUKAInpaintPipeline
    from asuka.sd_variants import load_prompt_embeds

    mae_out = runs[MAEStage][1]
    flags = common_flags(train_inputs, tmp_path / "aligned", steps=2) + ["--mae", str(mae_out), "--sd",
                                                                         str(train_inputs["sd"])]
    run(AlignmentStage, flags)
    record = assemble(train_inputs["sd"], tmp_path / "asuka", mae=mae_out, alignment=tmp_path / "aligned")
    assert record["components"]["mae"]["source"] == str(mae_out)
    pipe = ASUKAInpaintPipeline.from_pretrained(tmp_path / "asuka", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected_mae = MAEPrior.from_pretrained(mae_out / "mae").state_dict()
    assert all(torch.equal(pipe.mae.state_dict()[k], v) for k, v in expected_mae.items())
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[16:40, 20:50] = True
    out = pipe(image, hole, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    result = np.rint(out.images[0] * 255).astype(np.uint8)
    assert np.array_equal(result[~hole], image[~hole]) and not np.array_equal(result[hole], image[hole])
    embeds = load_prompt_embeds(runs[SDPromptStage][1] / "prompt_embeds.safetensors")
    plain = ASUKAInpaintPipeline.from_sd_inpaint(train_inputs["sd"])
    plain.set_progress_bar_config(disable=True)
    filled = plain(image, hole, num_inference_steps=2, prompt_embeds=embeds, output_type="np").images
    assert filled.shape == (1, 64, 64, 3)


def test_bad_inputs_are_one_line_errors(runs, train_inputs, tmp_path, capsys):
    from asuka.assemble import assemble
    from asuka.models import PriorAlignment
    from misato.cli import main as misato_main

    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="no .png/.jpg/.jpeg images"):
        run(MAEStage, common_flags({**train_inputs, "images": tmp_path / "empty"}, tmp_path / "o1")
            + ["--mae-init", str(train_inputs["mae"])])
    alignment = PriorAlignment(prior_dim=16, cross_attention_dim=32, num_heads=1)
    torch.save(alignment.state_dict(), tmp_path / "alignment.pth")
    with pytest.raises(MisatoError, match="not an MAE-FAR checkpoint"):
        run(MAEStage, common_flags(train_inputs, tmp_path / "o2") + ["--mae-init", str(tmp_path / "alignment.pth")])
    with pytest.raises(MisatoError, match="a training output of alignment, not mae"):
        assemble(train_inputs["sd"], tmp_path / "asuka", mae=runs[AlignmentStage][1])
    with pytest.raises(MisatoError, match="a training output of mae, not alignment"):
        run(AlignmentStage, common_flags(train_inputs, tmp_path / "o3") + ["--mae", str(train_inputs["mae"]), "--sd",
            str(train_inputs["sd"]), "--alignment-init", str(runs[MAEStage][1])])
    with pytest.raises(MisatoError, match="not a checkpoint written by asuka.train"):
        read_train_checkpoint(train_inputs["mae"])
    code = misato_main(["train", "alignment", *common_flags(train_inputs, tmp_path / "o4"), "--full-prior-peak", "1.5"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "--full-prior-peak: must be a probability in [0, 1]" in error
    code = misato_main(["train", "alignment", *common_flags(train_inputs, tmp_path / "o5"), "--sd", str(tmp_path)])
    assert code == 2 and "is not a diffusers SD-inpainting folder" in capsys.readouterr().err


def test_command_lines(train_inputs, tmp_path, capsys):
    from asuka.train.mae import main
    from misato.cli import main as misato_main

    assert misato_main(["train", "mae", *common_flags(train_inputs, tmp_path / "cli", steps=1),
                        "--mae-init", str(train_inputs["mae"])]) == 0
    assert "train mae: finished at step 1" in capsys.readouterr().out
    assert main([*common_flags(train_inputs, tmp_path / "module", steps=1)]) == 2
    assert "--mae-init is required" in capsys.readouterr().err


def test_validation_grid(train_inputs, tmp_path):
    from misato.io import read_image

    train_stage(AlignmentStage, train_inputs, tmp_path / "val", steps=2,
                extra=["--val-inference-steps", "2"], **{"validate-every": 1})
    grids = sorted((tmp_path / "val" / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step-00000001.png", "step-00000002.png"]
    assert read_image(grids[0]).shape == (3 * 64, 2 * 64, 3)


def test_grow_token_mask_and_full_prior_schedule():
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[0, :3] = True
    masked[1, :14] = True
    grown = grow_token_mask(masked, 0.75, torch.tensor([1, 2]))
    assert grown.sum(1).tolist() == [12, 14] and bool(grown[masked].all())
    assert torch.equal(grown, grow_token_mask(masked, 0.75, torch.tensor([1, 2])))
    assert not torch.equal(grown[0], grow_token_mask(masked, 0.75, torch.tensor([3, 2]))[0])
    p = [full_prior_probability(s, 0.5, 4, 10, 0.1) for s in range(12)]
    assert p[:4] == [0.125, 0.25, 0.375, 0.5] and p[10:] == [0.1, 0.1]
    assert all(a >= b for a, b in zip(p[3:], p[4:]))


def test_assemble_takes_a_decoder_training_output(train_inputs, tmp_path):
    """The folder layout a decoder stage writes (train.json naming an InpaintingDecoder folder) assembles."""
    from asuka.assemble import assemble, load_sd_inpaint
    from asuka.models import InpaintingDecoder
    from asuka.pipeline import ASUKAInpaintPipeline

    with seeded(3):
        decoder = InpaintingDecoder.from_vae(load_sd_inpaint(train_inputs["sd"]).vae)
    decoder.save_pretrained(tmp_path / "run" / "decoder")
    record = {"stage": "decoder", "component": "decoder", "complete": True, "outputs": {"decoder": "decoder"}}
    (tmp_path / "run" / "train.json").write_text(json.dumps(record))
    assemble(train_inputs["sd"], tmp_path / "asuka", decoder=tmp_path / "run")
    loaded = ASUKAInpaintPipeline.from_pretrained(tmp_path / "asuka", local_files_only=True).decoder
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in decoder.state_dict().items())
    (tmp_path / "run" / "train.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(MisatoError, match="the training run is unfinished"):
        assemble(train_inputs["sd"], tmp_path / "again", decoder=tmp_path / "run")


@pytest.mark.parametrize("preprocessing", ["official", "area"])
def test_alignment_prior_is_made_as_at_inference(preprocessing, train_inputs, tmp_path):
    from tests.helpers import release_mae_example

    stage, batch = build_stage(AlignmentStage, train_inputs, tmp_path, **{"mae-preprocessing": preprocessing})
    image, mask, small, small_hole = release_mae_example()  # 128 px, hole edges off the resize grid
    batch = {**batch, "image": image.expand(2, -1, -1, -1), "mask": mask.expand(2, -1, -1, -1)}
    step = 10_000  # past the full-image-prior schedule (final probability 0): every prior sees its mask
    mae, alignment = stage.frozen["mae"], stage.trainable["alignment"]
    with torch.no_grad():
        official = alignment(mae(small, small_hole)).expand(2, -1, -1)
        area = alignment(mae(image, mask)).expand(2, -1, -1)
        prior = stage.condition(batch, step)
    assert not torch.allclose(official, area)
    torch.testing.assert_close(prior, official if preprocessing == "official" else area)
