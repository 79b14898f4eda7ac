"""The ``torchscript`` method: any exported ``f(image, mask) -> image``, its range, polarity and padding options."""
import json

import numpy as np
import pytest
import torch

from baselines import create_method
from misato.cli import main
from misato.errors import MisatoError
from misato.io import read_image, read_mask
from tests.helpers import smooth_image, write_misato_folder


class GreyFill(torch.nn.Module):
    """Fills the hole with grey; ``hole_is_one`` fixes its mask polarity, ``signed`` its range ([-1, 1])."""

    def __init__(self, hole_is_one: bool, signed: bool, multiple: int = 1) -> None:
        super().__init__()
        self.hole_is_one, self.signed, self.multiple = hole_is_one, signed, multiple

    def forward(self, image, mask):
        if image.shape[-1] % self.multiple or image.shape[-2] % self.multiple:
            raise RuntimeError("size not padded")
        hole = mask if self.hole_is_one else 1 - mask
        if self.signed:
            assert bool(image.min() >= -1) and bool(image.min() < 0)
        grey = 0.0 if self.signed else 0.5  # the middle of either range
        return image * (1 - hole) + grey * hole


def export(module, path):
    torch.jit.script(module).save(str(path))
    return str(path)


@pytest.mark.parametrize("hole_is_one", [True, False])
@pytest.mark.parametrize("signed", [False, True])
def test_polarity_and_range_both_ways(tmp_path, hole_is_one, signed):
    weights = export(GreyFill(hole_is_one, signed, multiple=8), tmp_path / "net.pt")
    image = smooth_image(np.random.default_rng(0), 30)
    image[(image == 127) | (image == 128)] = 126  # so the filled grey is visible
    hole = np.zeros((30, 30), bool)
    hole[7, 9] = True
    options = {"input_range": "-1,1" if signed else "0,1"}
    right = create_method("torchscript", weights=weights, mask_polarity="hole" if hole_is_one else "known", **options)
    out = right.inpaint_one(image, hole, seed=0)
    assert np.argwhere((out != image).any(-1)).tolist() == [[7, 9]]  # only the hole pixel changes
    assert (out[7, 9] == (128 if signed else 127)).all()  # 0 * 127.5 + 128 (MAT); 0.5 * 255 = 127.5 truncated (LaMa)
    wrong = create_method("torchscript", weights=weights, mask_polarity="known" if hole_is_one else "hole", **options)
    np.testing.assert_array_equal(wrong.inpaint_one(image, hole, seed=0), image)  # the net filled the known region


def test_padding_option_and_wrong_output(tmp_path):
    weights = export(GreyFill(True, False, multiple=8), tmp_path / "net.pt")
    image = smooth_image(np.random.default_rng(0), 30)
    hole = np.zeros((30, 30), bool)
    hole[3:5, 3:5] = True
    with pytest.raises(torch.jit.Error, match="size not padded"):
        create_method("torchscript", weights=weights, pad_multiple=1).inpaint_one(image, hole, seed=0)
    assert create_method("torchscript", weights=weights, pad_multiple=16).inpaint_one(image, hole, 0).shape == image.shape

    class Shrinks(torch.nn.Module):
        def forward(self, image, mask):
            return image[:, :, :-9]

    weights = export(Shrinks(), tmp_path / "shrinks.pt")
    with pytest.raises(MisatoError, match=r"returned a tensor of shape \(1, 3, 23, 32\), expected \[1, 3, 32, 32\]"):
        create_method("torchscript", weights=weights).inpaint_one(image, hole, seed=0)


def test_bad_options_and_files(tmp_path):
    weights = export(GreyFill(True, False), tmp_path / "net.pt")
    with pytest.raises(MisatoError, match="needs --weights FILE"):
        create_method("torchscript")
    with pytest.raises(MisatoError, match="--mask-polarity must be one of hole, known"):
        create_method("torchscript", weights=weights, mask_polarity="white")
    with pytest.raises(MisatoError, match="--pad-multiple must be at least 1"):
        create_method("torchscript", weights=weights, pad_multiple=0)
    with pytest.raises(MisatoError, match="--device must be"):
        create_method("torchscript", weights=weights, device="gpu")
    torch.save({"a": torch.zeros(1)}, tmp_path / "state.pt")
    with pytest.raises(MisatoError, match="not a TorchScript file"):
        create_method("torchscript", weights=str(tmp_path / "state.pt"))
    with pytest.raises(MisatoError, match="no such file"):
        create_method("torchscript", weights=str(tmp_path / "absent.pt"))


def test_through_misato_inpaint(tmp_path, capsys):
    weights = export(GreyFill(False, True), tmp_path / "net.pt")
    data = write_misato_folder(tmp_path / "data", n=3, size=24)
    out = tmp_path / "pred"
    args = ["inpaint", "--method", "torchscript", "--weights", weights, "--input-range=-1,1", "--mask-polarity",
            "known", "--data", str(data), "--out", str(out), "--batch-size", "3"]
    assert main(args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["mask_polarity"] == "known" and record["input_range"] == "-1,1" and record["weights_origin"] == "explicit"
    for name in ("0000", "0001", "0002"):
        hole = read_mask(data / "mask" / f"{name}.png")
        pred, image = read_image(out / f"{name}.png"), read_image(data / "image" / f"{name}.png")
        assert (pred[hole] == 128).all() and (pred[~hole] == image[~hole]).all()
    assert main(args[:6] + ["--mask-polarity", "white"] + args[8:]) == 2
    assert "--mask-polarity must be one of hole, known" in capsys.readouterr().err
