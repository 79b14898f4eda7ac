"""The ``command`` method: an external script with its own file naming and polarity, driven through the runner."""
import os
import shlex
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from baselines import create_method, run_method
from baselines.command import PRESETS
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from tests.helpers import write_misato_folder

SCRIPT = Path(__file__).with_name("fake_upstream.py")
PYTHON = shlex.quote(sys.executable)
FAKE = f"{PYTHON} {shlex.quote(str(SCRIPT))}"
OWN_CONVENTIONS = {"image_pattern": "{name}.png", "mask_pattern": "{name}_m.png",
                   "output_pattern": "{name}_inpainted.png", "mask_polarity": "known"}


def expected_fill(image: np.ndarray, hole: np.ndarray, paste_back: bool = True) -> np.ndarray:
    """What fake_upstream.py computes, written independently: hole = truncated mean of the known pixels."""
    result = image.copy() if paste_back else ((image.astype(np.int64) + 1) % 256).astype(np.uint8)
    result[hole] = np.floor(image[~hole].astype(np.float64).mean(axis=0)).astype(np.uint8)
    return result


def fake(extra: str = "", layout: str = "--src {images} --masks {masks}") -> str:
    return f"{FAKE} {layout} --dst {{out}} {extra}".strip()


def check_outputs(data: Path, out: Path, paste_back: bool = True) -> None:
    outputs = list_images(out)
    assert sorted(outputs) == sorted(list_images(data / "image"))
    for name, path in outputs.items():
        image, hole = read_image(data / "image" / f"{name}.png"), read_mask(data / "mask" / f"{name}.png")
        np.testing.assert_array_equal(read_image(path), expected_fill(image, hole, paste_back))


@pytest.mark.parametrize("paste_back", [True, False])
def test_script_with_its_own_naming_and_polarity(tmp_path, paste_back):
    data = write_misato_folder(tmp_path / "data", n=3, size=24)
    method = create_method("command", command=fake(), paste_back=paste_back, chunk=2, **OWN_CONVENTIONS)
    record = run_method(method, data, tmp_path / "pred", progress=False)
    assert record["complete"] and record["mask_polarity"] == "known" and record["command"] == fake()
    check_outputs(data, tmp_path / "pred", paste_back)


def test_wrong_polarity_fills_the_known_pixels_instead(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=1, size=24)
    method = create_method("command", command=fake(), **{**OWN_CONVENTIONS, "mask_polarity": "hole"})
    run_method(method, data, tmp_path / "pred", progress=False)
    image, hole = read_image(data / "image" / "0000.png"), read_mask(data / "mask" / "0000.png")
    result = read_image(tmp_path / "pred" / "0000.png")
    np.testing.assert_array_equal(result[~hole], image[~hole])  # pasted back
    np.testing.assert_array_equal(result[hole], (image[hole].astype(np.int64) + 1) % 256)  # treated as known


def test_one_input_folder(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=24)
    method = create_method("command", command=fake(layout="--src {input} --masks {input}"), **OWN_CONVENTIONS)
    run_method(method, data, tmp_path / "pred", progress=False)
    check_outputs(data, tmp_path / "pred")


def test_cli_chunks_are_command_calls_and_a_failure_keeps_earlier_chunks(tmp_path, capsys):
    data = write_misato_folder(tmp_path / "data", n=5, size=24)
    counter, out = tmp_path / "calls.txt", tmp_path / "pred"
    command = fake(f"--counter {shlex.quote(str(counter))} --fail-after 1")
    argv = ["inpaint", "--method", "command", "--command", command, "--image-pattern", "{name}.png",
            "--mask-pattern", "{name}_m.png", "--output-pattern", "{name}_inpainted.png", "--mask-polarity", "known",
            "--chunk", "2", "--data", str(data), "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "exited with status 3" in error and "traceback line 29" in error and "traceback line 9" not in error
    assert "traceback line 10" in error  # the last 20 lines
    assert sorted(list_images(out)) == ["0000", "0001"]  # the first chunk, written before the failure
    counter.write_text("-10")
    assert main(argv + ["--resume"]) == 0
    assert counter.read_text() == "-8"  # 3 images left, chunks of 2: two calls
    check_outputs(data, out)


def test_wrong_size_missing_output_and_greyscale_are_refused(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=24)
    cases = [(fake("--shrink"), OWN_CONVENTIONS, "is 23x24 but its input is 24x24"),
             (fake(), {**OWN_CONVENTIONS, "output_pattern": "{name}.png"}, "wrote no 00000.png"),
             (fake("--gray"), OWN_CONVENTIONS, "00000_inpainted.png is a L image; expected 8-bit RGB")]
    for index, (command, conventions, message) in enumerate(cases):
        with pytest.raises(MisatoError, match=message):
            run_method(create_method("command", command=command, **conventions), data, tmp_path / f"p{index}",
                       progress=False)


def test_no_shell_keeps_a_path_with_spaces_one_word_and_shell_mode_quotes(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=1, size=24)
    weights = tmp_path / "my weights" / "w.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    method = create_method("command", command=fake("--require {weights}"), weights=str(weights), **OWN_CONVENTIONS)
    assert run_method(method, data, tmp_path / "a", progress=False)["weights_sha256"]
    shell = f"cd {{repo}} && {fake('--require w.bin')} > /dev/null"
    method = create_method("command", command=shell, shell=True, repo=str(weights.parent), **OWN_CONVENTIONS)
    run_method(method, data, tmp_path / "b", progress=False)
    check_outputs(data, tmp_path / "b")
    without_shell = create_method("command", command=shell, repo=str(weights.parent), **OWN_CONVENTIONS)
    with pytest.raises(MisatoError, match="cannot start 'cd'"):  # no shell: `cd` is not a program
        run_method(without_shell, data, tmp_path / "c", progress=False)


@pytest.mark.parametrize("options, message", [
    ({}, "needs --command TEMPLATE or --preset"),
    ({"command": "x {images} {masks}"}, "must use {out}"),
    ({"command": "x {imgs} {masks} {out}"}, r"unknown placeholder\(s\) \{imgs\}"),
    ({"command": "x {images} {masks} {out} {weights}"}, "uses {weights}: pass --weights"),
    ({"command": "x {input} {out}"}, "--image-pattern and --mask-pattern must differ"),
    ({"command": "x {images} {masks} {out}", "output_pattern": "out.png"}, "must contain {name}"),
    ({"preset": "lama", "repo": "/nonexistent/lama"}, "--repo /nonexistent/lama: no such folder"),
    ({"command": "x {images} {masks} {out}", "chunk": 0}, "--chunk must be at least 1"),
    ({"preset": "comod"}, "--preset comod runs the script inside its repository: pass --repo"),
    ({"command": "x {images} {masks} {out} 'unclosed"}, "cannot split it into words"),
])
def test_bad_templates(options, message):
    with pytest.raises(MisatoError, match=message):
        create_method("command", **options)


FAKE_LAMA = '''
    # advimman/lama bin/predict.py's interface: hydra key=value arguments; masks are indir/**/*mask*.png, the image
    # is the mask path cut at the last "_mask" + ".png", mask > 0 is the hole; writes outdir/<mask stem>.png
    import glob, os, sys
    import numpy as np
    from PIL import Image
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    assert os.path.isfile(os.path.join(args["model.path"], "config.yaml"))
    indir = args["indir"].rstrip("/") + "/"
    for mask_name in sorted(glob.glob(os.path.join(indir, "**", "*mask*.png"), recursive=True)):
        image = np.array(Image.open(mask_name.rsplit("_mask", 1)[0] + ".png").convert("RGB"))
        image[np.asarray(Image.open(mask_name)) > 0] = 7
        Image.fromarray(image).save(os.path.join(args["outdir"], os.path.splitext(mask_name[len(indir):])[0] + ".png"))
'''
FAKE_MAT = '''
    # fenglinglwb/MAT generate_image.py's interface: images and masks globbed and paired in sorted order,
    # mask / 255 = 1 where known; writes outdir/<image name>
    import argparse, glob, os
    import numpy as np
    from PIL import Image
    parser = argparse.ArgumentParser()
    for flag in ("--network", "--dpath", "--mpath", "--outdir"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    images = sorted(glob.glob(args.dpath + "/*.png") + glob.glob(args.dpath + "/*.jpg"))
    masks = sorted(glob.glob(args.mpath + "/*.png") + glob.glob(args.mpath + "/*.jpg"))
    assert len(images) == len(masks) and os.path.isfile(args.network)
    for image_name, mask_name in zip(images, masks):
        image = np.array(Image.open(image_name).convert("RGB"))
        image[np.asarray(Image.open(mask_name)) / 255 < 0.5] = 7
        Image.fromarray(image).save(os.path.join(args.outdir, os.path.basename(image_name)))
'''

FAKE_COMOD = '''
    # zengxianyu/co-mod-gan-pytorch test.py --dataset_mode testimage: masks listed from mask_dir, the image of the
    # same name in image_dir, mask > 0 is the hole; writes output_dir/<name>
    import argparse, os
    import numpy as np
    from PIL import Image
    parser = argparse.ArgumentParser()
    for flag in ("--image_dir", "--mask_dir", "--output_dir", "--which_epoch", "--name"):
        parser.add_argument(flag, required=True)
    args, _ = parser.parse_known_args()
    assert os.path.isfile(f"checkpoints/{args.name}/{args.which_epoch}_net_G_ema.pth")
    for mask_name in os.listdir(args.mask_dir):
        image = np.array(Image.open(f"{args.image_dir}/{mask_name}").convert("RGB"))
        image[np.asarray(Image.open(f"{args.mask_dir}/{mask_name}").convert("L")) > 0] = 7
        Image.fromarray(image).save(f"{args.output_dir}/{mask_name}")
'''
FAKE_MAEFAR = '''
    # ewrfcas/MAE-FAR test_custom.py: images and masks globbed and paired in sorted order, mask > 127 is the hole;
    # writes output_path/<image name, .jpg -> .png>
    import argparse, glob, os
    import numpy as np
    from PIL import Image
    parser = argparse.ArgumentParser()
    for flag in ("--resume", "--config", "--image_path", "--mask_path", "--output_path", "--image_size"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--load_pl", action="store_true")
    args = parser.parse_args()
    assert args.load_pl and os.path.isfile(args.config) and os.path.isfile(args.resume)
    images = sorted(glob.glob(args.image_path + "/*"))
    masks = sorted(glob.glob(args.mask_path + "/*"))
    for image_name, mask_name in zip(images, masks):
        image = np.array(Image.open(image_name).convert("RGB"))
        image[np.asarray(Image.open(mask_name)) > 127] = 7
        Image.fromarray(image).save(os.path.join(args.output_path, os.path.basename(image_name).replace(".jpg", ".png")))
'''


@pytest.mark.parametrize("preset, script, weights", [
    ("lama", ("bin/predict.py", FAKE_LAMA), "big-lama"),
    ("mat", ("generate_image.py", FAKE_MAT), "G.pkl"),
    ("comod", ("test.py", FAKE_COMOD), None),
    ("maefar", ("test_custom.py", FAKE_MAEFAR), "G.pkl"),
])
def test_presets_match_the_upstream_interfaces(tmp_path, monkeypatch, preset, script, weights):
    repo = tmp_path / "repo"
    (repo / script[0]).parent.mkdir(parents=True, exist_ok=True)
    (repo / script[0]).write_text(textwrap.dedent(script[1]))
    (tmp_path / "big-lama").mkdir()
    (tmp_path / "big-lama" / "config.yaml").write_text("{}")
    (tmp_path / "G.pkl").write_bytes(b"pkl")
    for checkpoint in ("checkpoints/comod-places-512/co-mod-gan-places2-050000_net_G_ema.pth",
                       "configs/config_FAR_places2_finetune_512.yml"):
        (repo / checkpoint).parent.mkdir(parents=True, exist_ok=True)
        (repo / checkpoint).write_bytes(b"x")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])  # `python`
    data = write_misato_folder(tmp_path / "data", n=3, size=24, names=["a", "b_mask", "c"])
    method = create_method("command", preset=preset, repo=str(repo),
                           weights=None if weights is None else str(tmp_path / weights))
    record = run_method(method, data, tmp_path / "pred", progress=False)
    assert record["command"] == PRESETS[preset].command and record["mask_polarity"] == PRESETS[preset].mask_polarity
    for name in ("a", "b_mask", "c"):
        image, hole = read_image(data / "image" / f"{name}.png"), read_mask(data / "mask" / f"{name}.png")
        result = read_image(tmp_path / "pred" / f"{name}.png")
        np.testing.assert_array_equal(result[~hole], image[~hole])
        assert (result[hole] == 7).all()


def test_help_gives_each_methods_own_default_of_a_shared_flag():
    from baselines.base import method_specs
    from misato.cli_inpaint import _defaults_help

    specs = method_specs()
    assert _defaults_help(specs, "mask_polarity") == "; default hole (torchscript)"  # command: the preset's
    assert _defaults_help(specs, "chunk") == "; default 16"
    assert _defaults_help(specs, "weights") == ""
    assert create_method("command", command=fake(), chunk=3).batch_size == 3  # the runner's default batch
