"""The adapter-options mechanism, plug-in methods (``package.module:factory`` and the entry-point group)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from baselines import create_method, run_method
from baselines.base import InpaintingMethod, MethodOption, MethodSpec, get_spec, method_specs, register_method
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from tests.helpers import write_misato_folder

REPO = Path(__file__).resolve().parents[2]


class FlatFill(InpaintingMethod):
    """Fills the hole with one grey level (a user's own method, defined outside the package)."""

    name = "flat"

    def __init__(self, level: int = 128) -> None:
        self.level = level

    def inpaint_one(self, image, mask, seed):
        out = image.copy()
        out[mask] = self.level
        return out

    def describe(self):
        return {"method": self.name, "level": self.level}


class BreaksLater(FlatFill):
    """Right for two images, then returns ``bad(image)``."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = bad, 0

    def inpaint_one(self, image, mask, seed):
        self.calls += 1
        return super().inpaint_one(image, mask, seed) if self.calls <= 2 else self.bad(image)


def make_broken():
    return 1 / 0


def make_flat():
    """Grey fill (test plug-in)."""
    return FlatFill()


FLAT_SPEC = MethodSpec("flat", FlatFill, options=(MethodOption("level", int, "grey level", default=7),))


def test_duplicate_name_is_refused_and_options_are_checked():
    method_specs()
    with pytest.raises(MisatoError, match="'telea' is registered twice"):
        register_method("telea", make_flat)
    with pytest.raises(ValueError, match="twice"):
        MethodSpec("x", make_flat, options=(MethodOption("a", int, ""), MethodOption("a", int, "")))
    with pytest.raises(ValueError, match="type must be"):
        MethodOption("a", list, "")
    with pytest.raises(ValueError, match="keyword name"):
        MethodOption("two words", int, "")
    assert MethodOption("guidance_scale", float, "").flag == "--guidance-scale"


def test_builtin_methods_declare_their_flags(tmp_path, capsys):
    specs = method_specs()
    assert {"telea", "navier-stokes", "asuka", "sd", "sd-text", "sd-prompt"} <= set(specs)
    assert specs["sd-prompt"].option("prompt_embeds") is not None and specs["asuka"].option("prompt_embeds") is None
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    assert main(["inpaint", "--method", "telea", "--radius", "5", "--data", str(data), "--out",
                 str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "run.json").read_text())["radius"] == 5
    assert main(["inpaint", "--method", "navier-stokes", "--data", str(data), "--out", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "run.json").read_text())["radius"] == 3  # the declared default
    assert main(["inpaint", "--method", "telea", "--steps", "3", "--data", str(data), "--out",
                 str(tmp_path / "x")]) == 2
    assert "method telea takes no --steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # refused by the parser, before anything runs
        main(["inpaint", "--method", "telea", "--batch-size", "0", "--data", str(data), "--out", str(tmp_path / "x")])
    assert stopped.value.code == 2
    assert "--batch-size: expected an integer from 1 to 4096, got 0" in capsys.readouterr().err
    assert main(["inpaint", "--method", "nope", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "available: asuka" in capsys.readouterr().err


def test_batch_size_reaches_the_method(tmp_path, monkeypatch):
    data = write_misato_folder(tmp_path / "data", n=5, size=32)
    sizes = []
    original = FlatFill.inpaint

    def spy(self, images, masks, seeds):
        sizes.append(len(images))
        return original(self, images, masks, seeds)

    monkeypatch.setattr(FlatFill, "inpaint", spy)
    assert main(["inpaint", "--method", f"{__name__}:make_flat", "--batch-size", "2", "--data", str(data),
                 "--out", str(tmp_path / "p")]) == 0
    assert sizes == [2, 2, 1]


def test_module_path_plug_in_gets_the_runner(tmp_path, capsys):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    out = tmp_path / "pred"
    assert main(["inpaint", "--method", f"{__name__}:make_flat", "--data", str(data), "--out", str(out),
                 "--limit", "2"]) == 0
    assert sorted(list_images(out)) == ["0000", "0001"]
    record = json.loads((out / "run.json").read_text())
    assert record["method"] == "flat" and record["level"] == 128
    for name in ("0000", "0001"):
        hole = read_mask(data / "mask" / f"{name}.png")
        pred, image = read_image(out / f"{name}.png"), read_image(data / "image" / f"{name}.png")
        assert (pred[hole] == 128).all() and (pred[~hole] == image[~hole]).all()
    # resume fills in the rest with the same plug-in
    record["complete"] = False
    (out / "run.json").write_text(json.dumps(record))
    assert main(["inpaint", "--method", f"{__name__}:make_flat", "--data", str(data), "--out", str(out),
                 "--resume"]) == 0
    assert sorted(list_images(out)) == ["0000", "0001", "0002"]
    # a spec's declared defaults apply; a bare factory takes no flags
    assert create_method(f"{__name__}:FLAT_SPEC", level=9).level == 9
    assert main(["inpaint", "--method", f"{__name__}:make_flat", "--radius", "2", "--data", str(data), "--out",
                 str(tmp_path / "x")]) == 2
    assert f"method {__name__}:make_flat takes no --radius" in capsys.readouterr().err
    assert main(["inpaint", "--method", "no_such_module:f", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "cannot import it" in capsys.readouterr().err
    with pytest.raises(MisatoError, match="neither a factory"):
        get_spec(f"{__name__}:REPO")
    with pytest.raises(MisatoError, match="returned str, not a baselines.InpaintingMethod"):
        create_method("builtins:str")
    assert main(["inpaint", "--method", "json:loads", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--method json:loads: calling it failed with TypeError: " in err and err.count("\n") == 1, err
    with pytest.raises(MisatoError, match=rf"--method {__name__}:make_broken: calling it failed with "
                                          rf"ZeroDivisionError: .*\(at {__file__}:\d+\)$"):
        create_method(f"{__name__}:make_broken")


@pytest.mark.parametrize("bad, found", [(lambda image: image[:-1], r"uint8 \(31, 32, 3\)"),
                                        (lambda image: image.astype(np.float32), r"float32 \(32, 32, 3\)"),
                                        (lambda image: image.tolist(), "list")])
def test_wrong_output_is_a_clear_error_and_finished_outputs_stay(tmp_path, bad, found):
    data = write_misato_folder(tmp_path / "data", n=4, size=32)
    out = tmp_path / "pred"
    with pytest.raises(MisatoError, match=rf"flat returned {found} for 0002, expected uint8 \(32, 32, 3\)"):
        run_method(BreaksLater(bad), data, out, progress=False)
    assert sorted(list_images(out)) == ["0000", "0001"]
    assert not json.loads((out / "run.json").read_text())["complete"]


def test_a_method_dropping_images_from_a_batch_is_a_clear_error(tmp_path):
    class DropsOne(FlatFill):
        def inpaint(self, images, masks, seeds):
            return super().inpaint(images, masks, seeds)[:-1]

    data = write_misato_folder(tmp_path / "data", n=4, size=32)
    with pytest.raises(MisatoError, match="returned 1 images for a batch of 2"):
        run_method(DropsOne(), data, tmp_path / "pred", batch_size=2, progress=False)


def test_entry_point_plug_in(tmp_path):
    """A package installed with a ``misato.methods`` entry point shows up with its own flags."""
    site = tmp_path / "site"
    (site / "flatplug-0.1.dist-info").mkdir(parents=True)
    (site / "flatplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: flatplug\nVersion: 0.1\n")
    (site / "flatplug-0.1.dist-info" / "entry_points.txt").write_text(
        f"[misato.methods]\nflat = {__name__}:FLAT_SPEC\n")
    data = write_misato_folder(tmp_path / "data", n=1, size=32)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    command = [sys.executable, "-m", "misato", "inpaint", "--method", "flat", "--level", "40", "--data", str(data),
               "--out", str(tmp_path / "pred")]
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
    hole = read_mask(data / "mask" / "0000.png")
    assert (read_image(tmp_path / "pred" / "0000.png")[hole] == 40).all()
    # an entry point clashing with a built-in name is refused, naming it
    (site / "flatplug-0.1.dist-info" / "entry_points.txt").write_text(
        f"[misato.methods]\ntelea = {__name__}:make_flat\n")
    result = subprocess.run(command[:5] + command[7:], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "'telea' is registered twice" in result.stderr


def test_methods_lists_needs_and_readiness(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path))
    assert main(["methods", "--json"]) == 0
    rows = {row["method"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == set(method_specs())
    assert rows["telea"]["ready"] and rows["telea"]["weights"] == [] and rows["telea"]["flags"] == ["--radius"]
    assert rows["sd"]["gpu_advised"] and not rows["telea"]["gpu_advised"]
    assert not rows["lama"]["ready"]
    assert rows["sd"]["model_folder"] and rows["asuka"]["model_folder"] and not rows["telea"]["model_folder"]
    assert not rows["asuka-flux"]["model_folder"]  # its released files are registry entries, checked as such
    (tmp_path / "big-lama.pt").write_bytes(b"x")  # found where the registry looks, but not IOPaint's md5
    (tmp_path / "maefar_places2.ckpt").write_bytes(b"x")  # no digest published: used as found
    assert main(["methods"]) == 0
    table = capsys.readouterr().out
    lama_row = next(line for line in table.splitlines() if line.startswith("lama "))
    maefar_row = next(line for line in table.splitlines() if line.startswith("maefar "))
    assert "needs big-lama.pt (or --weights FILE)" in lama_row  # its best.ckpt comes that way
    assert "weights bad" in lama_row and "expected md5 e3aa4aaa15225a33ec84f9f4bc47e500" in table
    assert "ready" in maefar_row and f"found: {tmp_path / 'maefar_places2.ckpt'}" in table
    sd_row = next(line for line in table.splitlines() if line.startswith("sd "))
    assert "needs --model" in sd_row and "ready" not in sd_row  # a folder the listing cannot check


@pytest.mark.parametrize("name", [name for name, spec in method_specs().items()
                                  if "device" in {option.name for option in spec.options}])
def test_an_unusable_device_is_refused_before_any_weights_are_looked_for(name, tmp_path, monkeypatch):
    """Every method with --device: `--device cuda` on a machine without CUDA is one clear error (it was a torch
    traceback for comod), given even with no weights anywhere."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match="--device cuda: no CUDA device is available here"):
        create_method(name, device="cuda")
