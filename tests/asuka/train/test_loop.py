"""The loop itself with a toy two-optimiser (GAN-shaped) stage: phases, gradients per phase, accumulation,
exact resume with several optimisers, mixed precision, and a too-small image as a one-line error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from asuka.train.data import per_sample_randn
from asuka.train.loop import Optimiser, Stage, adamw, lr_scheduler_for, read_train_checkpoint, run
from asuka.train.mae import MAEStage
from misato.errors import MisatoError
from tests.asuka.train.conftest import common_flags


class ToyGAN(Stage):
    """Generator fills the hole, discriminator tells real from filled; the discriminator joins at step 2."""

    name = "toy-gan"
    component = "toy"
    outputs = ("toy.pt",)
    seen: list = []

    def __init__(self, config):
        super().__init__(config)
        self.trainable = {"generator": torch.nn.Conv2d(4, 3, 3, padding=1),
                          "discriminator": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.Flatten(),
                                                               torch.nn.Linear(4 * 16 * 16, 1))}
        self.frozen = {"blur": torch.nn.Conv2d(3, 3, 3, padding=1, groups=3)}

    def optimisers(self):
        result = []
        for name in ("generator", "discriminator"):
            optimizer = adamw(self.trainable[name].parameters(), self.config)
            result.append(Optimiser(name, (name,), optimizer, lr_scheduler_for(optimizer, self.config)))
        return result

    def phases(self, step):
        return ["generator", "discriminator"] if step >= 2 else ["generator"]

    def _fake(self, batch):
        noise = per_sample_randn(batch["seed"], 5, (1, 64, 64)) * 0.1
        masked = batch["image"] * (1 - batch["mask"])
        out = self.trainable["generator"](torch.cat([self.frozen["blur"](masked), batch["mask"] + noise], 1))
        return out * batch["mask"] + batch["image"] * (1 - batch["mask"])

    def training_step(self, batch, step, phase):
        grads = {name: any(p.requires_grad for p in m.parameters()) for name, m in self._unwrapped.items()}
        ToyGAN.seen.append((step, phase, grads))
        if phase == "generator":
            fake = self._fake(batch)
            loss = F.l1_loss(fake, batch["image"])
            if step >= 2:
                loss = loss - 0.1 * self.unwrapped("discriminator")(fake).mean()
            return {"loss": loss}
        with torch.no_grad():
            fake = self._fake(batch)
        disc = self.trainable["discriminator"]
        return {"loss": F.relu(1 - disc(batch["image"])).mean() + F.relu(1 + disc(fake)).mean()}

    def save_output(self, out: Path):
        torch.save({k: m.state_dict() for k, m in self.trainable.items()}, out / "toy.pt")
        return {"toy": "toy.pt"}


def _weights(out):
    return torch.load(out / "toy.pt", weights_only=True)


def test_phases_get_only_their_own_gradients_and_frozen_modules_none(train_inputs, tmp_path):
    ToyGAN.seen.clear()
    record = run(ToyGAN, common_flags(train_inputs, tmp_path / "gan", steps=3))
    assert [(s, p) for s, p, _ in ToyGAN.seen] == [(0, "generator"), (1, "generator"), (2, "generator"),
                                                   (2, "discriminator")]
    assert ToyGAN.seen[2][2] == {"generator": True, "discriminator": False}
    assert ToyGAN.seen[3][2] == {"generator": False, "discriminator": True}
    assert {"generator/loss", "discriminator/loss"} == set(record["final_losses"])
    header = (tmp_path / "gan" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"lr/generator", "lr/discriminator", "discriminator/loss"} <= set(header)


def test_two_optimiser_resume_is_bit_exact(train_inputs, tmp_path):
    reference = run(ToyGAN, common_flags(train_inputs, tmp_path / "once", steps=5))
    run(ToyGAN, common_flags(train_inputs, tmp_path / "twice", steps=5) + ["--stop-at-step", "3"])
    resumed = run(ToyGAN, common_flags(train_inputs, tmp_path / "twice", steps=5) + ["--resume"])
    assert resumed["final_losses"] == reference["final_losses"]
    once, twice = _weights(tmp_path / "once"), _weights(tmp_path / "twice")
    for module in once:
        for key, value in once[module].items():
            assert torch.equal(twice[module][key], value), (module, key)
    checkpoint = read_train_checkpoint(tmp_path / "twice" / "checkpoints" / "step-00000005.pt", ToyGAN)
    assert checkpoint["config"] == json.loads((tmp_path / "twice" / "train.json").read_text())["config"]
    assert set(checkpoint["optimisers"]) == {"generator", "discriminator"}
    with pytest.raises(MisatoError, match="a checkpoint of stage toy-gan, not mae"):
        read_train_checkpoint(tmp_path / "twice" / "checkpoints" / "step-00000005.pt", MAEStage)


def test_gradient_accumulation_equals_the_larger_batch(train_inputs, tmp_path):
    extra = ["--mae-init", str(train_inputs["mae"]), "--warmup-steps", "0", "--lr", "1e-3"]
    big = run(MAEStage, common_flags(train_inputs, tmp_path / "big", steps=2, batch=4) + extra)
    accumulated = run(MAEStage, common_flags(train_inputs, tmp_path / "acc", steps=2, batch=2)
                      + extra + ["--grad-accum", "2"])
    assert accumulated["global_batch"] == big["global_batch"] == 4
    assert accumulated["final_losses"]["loss"] == pytest.approx(big["final_losses"]["loss"], rel=1e-5)
    from asuka.models import MAEPrior

    a, b = MAEPrior.from_pretrained(tmp_path / "big" / "mae"), MAEPrior.from_pretrained(tmp_path / "acc" / "mae")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=3e-5, msg=key)


def test_bf16_runs_on_cpu(train_inputs, tmp_path):
    record = run(MAEStage, common_flags(train_inputs, tmp_path / "bf16", steps=2)
                 + ["--mae-init", str(train_inputs["mae"]), "--mixed-precision", "bf16"])
    assert record["complete"] and all(torch.isfinite(torch.tensor(v)) for v in record["final_losses"].values())


def test_too_small_images_are_a_one_line_error(train_inputs, tmp_path):
    with pytest.raises(MisatoError, match=r"is 66x72, smaller than the 70px crop") as error:
        run(MAEStage, common_flags(train_inputs, tmp_path / "small", steps=2, resolution=70, crop="random")
            + ["--mae-init", str(train_inputs["mae"])])
    assert "\n" not in str(error.value)


def test_tensorboard_scalars_equal_the_csv_log(train_inputs, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional: the loop then logs CSV only)")
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(ToyGAN, common_flags(train_inputs, tmp_path / "gan", steps=3))
    with open(tmp_path / "gan" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    events = EventAccumulator(str(tmp_path / "gan" / "tensorboard")).Reload()
    for tag in ("generator/loss", "lr/generator"):
        logged = [(int(row["step"]), float(row[tag])) for row in rows if row.get(tag)]
        board = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in board] == [step for step, _ in logged]
        assert [value for _, value in board] == pytest.approx([value for _, value in logged], rel=1e-6)
