"""LaMa: the big-lama generator against the upstream config, both official file formats, polarity, bad files."""
import json
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from baselines import create_method
from baselines.lama import build_generator
from misato.checkpoint import load_strict, read_lightning_checkpoint
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from tests.helpers import TRIPWIRE, TRIPWIRE_CLASS, save_lightning_checkpoint, smooth_image, write_misato_folder

# configs/training/big-lama.yaml (generator section)
NGF, N_DOWN, N_BLOCKS, RATIO = 64, 3, 18, 0.75


def expected_shapes() -> dict:
    """Every tensor of big-lama's generator, derived by hand from big-lama.yaml and ffc.py's layer rules."""
    shapes = {}

    def conv(key, cin, cout, k, bias=False):
        shapes[f"{key}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{key}.bias"] = (cout,)

    def bn(key, c):
        shapes.update({f"{key}.weight": (c,), f"{key}.bias": (c,), f"{key}.running_mean": (c,),
                       f"{key}.running_var": (c,), f"{key}.num_batches_tracked": ()})

    # model.1: 7x7 local-only FFC 4 -> 64
    conv("model.1.ffc.convl2l", 4, NGF, 7)
    bn("model.1.bn_l", NGF)
    # model.2, model.3: local-only stride-2 3x3 FFCs 64 -> 128 -> 256
    conv("model.2.ffc.convl2l", 64, 128, 3)
    bn("model.2.bn_l", 128)
    conv("model.3.ffc.convl2l", 128, 256, 3)
    bn("model.3.bn_l", 256)
    # model.4: 256 local -> 512 with 75 % global: 128 local, 384 global
    conv("model.4.ffc.convl2l", 256, 128, 3)
    conv("model.4.ffc.convl2g", 256, 384, 3)
    bn("model.4.bn_l", 128)
    bn("model.4.bn_g", 384)
    for block in range(N_BLOCKS):
        for layer in ("conv1", "conv2"):
            key = f"model.{5 + block}.{layer}"
            conv(f"{key}.ffc.convl2l", 128, 128, 3)
            conv(f"{key}.ffc.convl2g", 128, 384, 3)
            conv(f"{key}.ffc.convg2l", 384, 128, 3)
            conv(f"{key}.ffc.convg2g.conv1.0", 384, 192, 1)
            bn(f"{key}.ffc.convg2g.conv1.1", 192)
            conv(f"{key}.ffc.convg2g.fu.conv_layer", 384, 384, 1)
            bn(f"{key}.ffc.convg2g.fu.bn", 384)
            conv(f"{key}.ffc.convg2g.conv2", 192, 384, 1)
            bn(f"{key}.bn_l", 128)
            bn(f"{key}.bn_g", 384)
    index = 5 + N_BLOCKS + 1  # after the concat layer
    for cin, cout in ((512, 256), (256, 128), (128, 64)):
        shapes[f"model.{index}.weight"] = (cin, cout, 3, 3)  # ConvTranspose2d: [in, out, k, k]
        shapes[f"model.{index}.bias"] = (cout,)
        bn(f"model.{index + 1}", cout)
        index += 3
    conv(f"model.{index + 1}", NGF, 3, 7, bias=True)
    return shapes


def parameter_count_by_formula() -> int:
    """Trainable parameters from the config alone (BatchNorm: 2 per channel)."""
    g, l = int(512 * RATIO), 512 - int(512 * RATIO)  # 384 global, 128 local channels in the blocks
    spectral = g * (g // 2) + 2 * (g // 2) + (g * g) + 2 * g + (g // 2) * g  # conv1 + bn, fu conv + bn, conv2
    ffc_layer = 9 * (l * l + l * g + g * l) + spectral + 2 * l + 2 * g
    head = 49 * 4 * NGF + 2 * NGF
    down = 9 * 64 * 128 + 2 * 128 + 9 * 128 * 256 + 2 * 256 + 9 * 256 * 512 + 2 * 512
    up = sum(9 * i * o + o + 2 * o for i, o in ((512, 256), (256, 128), (128, 64)))
    tail = 49 * NGF * 3 + 3
    return head + down + N_BLOCKS * 2 * ffc_layer + up + tail


def test_generator_matches_the_upstream_config():
    assert parameter_count_by_formula() == 50_975_875  # "51.0 M" in the issue: confirmed
    generator = build_generator()
    shapes = {key: tuple(value.shape) for key, value in generator.state_dict().items()}
    assert shapes == expected_shapes()
    assert sum(p.numel() for p in generator.parameters()) == parameter_count_by_formula()
    assert isinstance(generator.model[-1], torch.nn.Sigmoid) and isinstance(generator.model[0], torch.nn.ReflectionPad2d)
    assert generator.model[1].ffc.convl2l.padding_mode == "reflect"


def random_generator(seed=0):
    """The real architecture with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    generator = build_generator()
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return generator.eval()


def write_lightning_checkpoint(path, generator_state, extra_state=None):
    """The layout of big-lama/models/best.ckpt: a Lightning dict, the training module's keys in state_dict."""
    state = OrderedDict((f"generator.{k}", v) for k, v in generator_state.items())
    state["discriminator.model0.0.weight"] = torch.zeros(64, 3, 4, 4)
    state.update(extra_state or {})
    return save_lightning_checkpoint(path, state, epoch=40,
                                     optimizer_states=[{"state": {}, "param_groups": [{"lr": 1e-3}]}])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lama")
    generator = random_generator()
    ckpt = write_lightning_checkpoint(root / "best.ckpt", generator.state_dict())
    # bin/to_jit.py: trace (image, mask) -> inpainted
    from baselines.lama import _modules

    wrapper = _modules().LamaInpainter(generator).eval()
    traced = torch.jit.trace(wrapper, (torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32)), strict=False,
                             check_trace=False)
    traced.save(str(root / "big-lama.pt"))
    return {"ckpt": ckpt, "pt": root / "big-lama.pt", "generator": generator,
            "ckpt_method": create_method("lama", weights=str(ckpt)),
            "pt_method": create_method("lama", weights=str(root / "big-lama.pt"))}


def upstream_prediction(generator, image, hole):
    """bin/predict.py's computation written out independently: pad symmetric to 8, mask>0, composite, truncate."""
    height, width = hole.shape
    pad = ((0, -height % 8), (0, -width % 8))
    img = torch.from_numpy(np.pad(image, pad + ((0, 0),), mode="symmetric").transpose(2, 0, 1).copy())[None] / 255.0
    mask = torch.from_numpy(np.pad(hole.astype(np.float32), pad, mode="symmetric"))[None, None]
    with torch.no_grad():
        predicted = generator(torch.cat([img * (1 - mask), mask], 1))
    inpainted = (mask * predicted + (1 - mask) * img)[0].permute(1, 2, 0).numpy()[:height, :width]
    return np.clip(inpainted * 255, 0, 255).astype(np.uint8)


def test_lightning_checkpoint_loads_strictly_without_running_pickled_code(files):
    TRIPWIRE.clear()
    checkpoint = read_lightning_checkpoint(files["ckpt"])
    refused = checkpoint.refused
    assert TRIPWIRE == [] and refused == [TRIPWIRE_CLASS]
    assert repr(checkpoint.content["hyper_parameters"]).startswith("<refused")
    method = files["ckpt_method"]
    record = method.describe()
    assert record["weights_format"] == "lightning" and record["refused_pickled_classes"] == refused
    assert record["weights_origin"] == "explicit" and len(record["weights_sha256"]) == 64
    loaded = method.net.generator.state_dict()
    for key, value in files["generator"].state_dict().items():
        assert torch.equal(loaded[key], value), key
    with pytest.raises(pickle.UnpicklingError):  # the plain safe loader refuses it outright: we read it instead
        torch.load(files["ckpt"], weights_only=True)


def test_lama_reproduces_the_upstream_computation_and_keeps_known_pixels(files):
    image = smooth_image(np.random.default_rng(3), 40)[:37, :30].copy()  # padded to 40 x 32
    hole = np.zeros((37, 30), bool)
    hole[5:20, 8:30] = True
    expected = upstream_prediction(files["generator"], image, hole)
    for weights in ("ckpt", "pt"):
        out = files[f"{weights}_method"].inpaint_one(image, hole, seed=0)
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[~hole], image[~hole])  # known pixels untouched
        diff = np.abs(out[hole].astype(int) - expected[hole].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05, weights  # float order of operations only
        assert (out[hole] != image[hole]).any()


def test_a_single_hole_pixel_changes_only_that_pixel_and_batches_agree(files):
    method = files["ckpt_method"]
    image = smooth_image(np.random.default_rng(1), 32)
    hole = np.zeros((32, 32), bool)
    hole[10, 12] = True
    other = np.zeros((32, 32), bool)
    other[3:9, 20:30] = True
    batch = method.inpaint([image, image[::-1].copy()], [hole, other], [0, 1])
    assert np.argwhere((batch[0] != image).any(-1)).tolist() == [[10, 12]]
    np.testing.assert_array_equal(batch[0], method.inpaint_one(image, hole, seed=0))
    np.testing.assert_array_equal(batch[1], method.inpaint_one(image[::-1].copy(), other, seed=1))
    np.testing.assert_array_equal(method.inpaint_one(image, np.zeros_like(hole), seed=0), image)


def test_end_to_end_through_misato_inpaint(files, tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    out = tmp_path / "pred"
    assert main(["inpaint", "--method", "lama", "--weights", str(files["ckpt"]), "--data", str(data), "--out",
                 str(out), "--batch-size", "2"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] and record["method"] == "lama" and record["weights_format"] == "lightning"
    for name, path in list_images(out).items():
        image, hole = read_image(data / "image" / f"{name}.png"), read_mask(data / "mask" / f"{name}.png")
        np.testing.assert_array_equal(read_image(path)[~hole], image[~hole])


def lama_status(capsys):
    assert main(["methods", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return next(row for row in rows if row["method"] == "lama")


def test_weights_found_in_the_searched_folders(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MisatoError, match=r"big-lama/models/best.ckpt and big-lama.pt in .*smartywu/big-lama"):
        create_method("lama")
    status = lama_status(capsys)
    assert not status["ready"] and status["weights"] == ["big-lama.pt"] and "--weights" in status["flags"]
    (tmp_path / "big-lama" / "models").mkdir(parents=True)
    (tmp_path / "big-lama" / "models" / "best.ckpt").symlink_to(files["ckpt"])
    record = create_method("lama").describe()
    assert record["weights_origin"] == "found" and record["weights"].endswith("best.ckpt")
    status = lama_status(capsys)
    assert status["ready"] and status["found"] == str(tmp_path / "big-lama" / "models" / "best.ckpt")


def test_another_models_checkpoint_is_a_clear_strict_load_report(files, tmp_path):
    lama_fourier = build_generator(n_blocks=9)  # configs/training/generator/ffc_resnet_075.yaml
    with pytest.raises(MisatoError, match=r"x.ckpt: not the expected weights for this network; missing keys: "
                                          r"model\.14\.conv1\.bn_g\.bias, .* \(\+404 more\); unexpected keys: "
                                          r"model\.15\.bias, model\.15\.weight, .* \(\+11 more\); shape mismatches: "
                                          r"model\.25\.bias \(3,\) \(expected \(256,\)\), "
                                          r"model\.25\.weight \(3, 64, 7, 7\) \(expected \(256,\)\)$"):
        load_strict(build_generator(), lama_fourier.state_dict(), "x.ckpt")
    torch.save({"state_dict": {"mat.synthesis.weight": torch.zeros(1)}}, tmp_path / "mat.ckpt")
    with pytest.raises(MisatoError, match=r"no 'generator\.\*' keys \(its keys start with mat\)"):
        create_method("lama", weights=str(tmp_path / "mat.ckpt"))
    state = dict(files["generator"].state_dict())
    state["model.1.ffc.convl2l.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(MisatoError, match=r"y.ckpt: not the expected weights for this network; shape mismatches: "
                                          r"model\.1\.ffc\.convl2l\.weight \(64, 3, 7, 7\) "
                                          r"\(expected \(64, 4, 7, 7\)\)$"):
        load_strict(build_generator(), state, "y.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(MisatoError, match=r"junk.ckpt: not a checkpoint of big-lama \(the Lightning"):
        create_method("lama", weights=str(tmp_path / "junk.ckpt"))
    with pytest.raises(MisatoError, match="no such file"):
        create_method("lama", weights=str(tmp_path / "absent.ckpt"))
