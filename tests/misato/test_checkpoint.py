import argparse
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from misato.checkpoint import LoadReport, load_strict, read_lightning_checkpoint, read_state_dict
from misato.errors import MisatoError


class _Hyper:  # a class of the training code, as Lightning pickles into hyper_parameters
    def __init__(self, width):
        self.width = width


class _Payload:
    """Unpickling this with plain pickle would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


@pytest.mark.parametrize("content", [os.urandom(4096), b"model weights, version 2\nsee README\n", b""],
                         ids=["random-bytes", "text", "empty"])
@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".safetensors"])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, content, suffix):
    path = tmp_path / f"file{suffix}"
    path.write_bytes(content)
    for reader in (read_state_dict, read_lightning_checkpoint):
        with pytest.raises(MisatoError) as error:
            reader(path, "the MAE prior")
        message = str(error.value)
        assert message == f"{path}: not a checkpoint of the MAE prior (it cannot be read as a safetensors or PyTorch weights file)"
        assert "weights_only" not in message and "\n" not in message


def test_a_plain_pickle_is_refused_without_torchs_protocol_warning(tmp_path, recwarn):
    """torch warns about the pickle protocol of a file not written by torch.save before it fails; the one-line
    error is the whole story."""
    import pickle

    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps({"conv.weight": [1.0, 2.0]}, protocol=4))
    with pytest.raises(MisatoError, match="not a checkpoint of the MAE prior"):
        read_state_dict(path, "the MAE prior")
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_state_dicts_are_read_from_torch_and_safetensors_files_and_unwrapped(tmp_path):
    state = {"a": torch.arange(4.0), "b.c": torch.ones(2, 2)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.ckpt")
    torch.save({"model": state}, tmp_path / "mae.pth")
    save_file(state, str(tmp_path / "plain.safetensors"))
    for name in ("wrapped.ckpt", "mae.pth", "plain.safetensors"):
        read = read_state_dict(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    with pytest.raises(MisatoError, match=r"not a checkpoint of X: expected a state dict of tensors$"):
        read_state_dict(tmp_path / "wrapped.ckpt", "X", wrappers=())
    with pytest.raises(MisatoError, match="checkpoint of X not found"):
        read_state_dict(tmp_path / "absent.pth", "X")


def test_pickled_objects_are_refused_by_the_safe_reader_in_one_line(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": _Hyper(64)}, tmp_path / "l.ckpt")
    with pytest.raises(MisatoError) as error:
        read_state_dict(tmp_path / "l.ckpt")
    assert "_Hyper" in str(error.value) and "\n" not in str(error.value)
    assert "weights_only" not in str(error.value)


def test_the_safe_reader_admits_argparse_namespace_records(tmp_path):
    """MAE / MAE-FAR checkpoints (mae_300.pth) store their training arguments as an argparse.Namespace."""
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1, input_size=256)}, tmp_path / "m.pth")
    assert torch.equal(read_state_dict(tmp_path / "m.pth")["w"], torch.ones(2))


def test_lightning_checkpoint_reader_keeps_tensors_and_data_and_refuses_code(tmp_path):
    marker = tmp_path / "executed"
    state = {"model.weight": torch.randn(3, 2), "model.bias": torch.nn.Parameter(torch.zeros(3))}
    checkpoint = {
        "epoch": 7, "global_step": np.int64(1200), "state_dict": state,
        "hyper_parameters": {"config": _Hyper(64), "lr": np.float32(0.5), "ns": argparse.Namespace(seed=1)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 1e-3}]}],
        "loops": {"payload": _Payload(marker)}, "array": np.arange(6).reshape(2, 3), "names": {"a", "b"},
    }
    torch.save(checkpoint, tmp_path / "best.ckpt")
    read = read_lightning_checkpoint(tmp_path / "best.ckpt", "LaMa's generator")
    assert not marker.exists()  # nothing named by the file was called
    assert read.refused == sorted(["argparse.Namespace", "posix.system" if os.name == "posix" else "nt.system",
                                   f"{__name__}._Hyper"])
    assert read.state_dict.keys() == state.keys() and torch.equal(read.state_dict["model.weight"], state["model.weight"])
    assert read.content["epoch"] == 7 and read.content["global_step"] == 1200 and read.content["names"] == {"a", "b"}
    assert read.content["hyper_parameters"]["lr"] == np.float32(0.5)
    np.testing.assert_array_equal(read.content["array"], np.arange(6).reshape(2, 3))
    assert torch.equal(read.content["optimizer_states"][0]["state"][0]["exp_avg"], torch.ones(3))
    assert read.content["hyper_parameters"]["config"].state == {"width": 64}  # kept as inert data
    assert read_lightning_checkpoint(tmp_path / "best.ckpt", wrappers=("state_dict",)).state_dict.keys() == state.keys()


def test_lightning_reader_reads_plain_files_too(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        read = read_lightning_checkpoint(tmp_path / name)
        assert read.refused == [] and torch.equal(read.state_dict["w"], torch.ones(2))


def test_load_strict_reports_and_refuses_in_one_line():
    torch.manual_seed(0)
    source, target = _net(), _net()
    state = dict(source.state_dict())
    state.pop("1.num_batches_tracked")  # old files lack the BatchNorm counter: accepted
    report = load_strict(target, {**state, "head.weight": torch.ones(1)}, "f.pth", ignored_prefixes=("head.",))
    assert isinstance(report, LoadReport) and report.ok and report.skipped == ["head.weight"]
    assert str(report) == "f.pth: all keys matched; ignored keys: head.weight"
    assert all(torch.equal(target.state_dict()[k], v) for k, v in state.items())
    broken = {**state, "0.weight": torch.zeros(4, 3, 5, 5), "extra": torch.ones(1)}
    broken.pop("1.running_var")
    with pytest.raises(MisatoError) as error:
        load_strict(_net(), broken, "f.pth")
    assert str(error.value) == ("f.pth: not the expected weights for this network; missing keys: 1.running_var; "
                                "unexpected keys: extra; shape mismatches: 0.weight (4, 3, 5, 5) (expected (4, 3, 3, 3))")


def test_load_strict_assigns_onto_meta_modules():
    source = _net()
    with torch.device("meta"):
        target = _net()
    load_strict(target, source.state_dict(), "f.pth")
    assert torch.equal(target[0].weight, source[0].weight)
