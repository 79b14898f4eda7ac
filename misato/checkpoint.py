"""Reading checkpoint files safely and loading them strictly: the one checkpoint reader of the toolkit.

- :func:`read_state_dict`: tensors of a ``.safetensors`` file or a ``torch.save`` file read with
  ``weights_only=True`` (nothing pickled is executed), optionally unwrapped from ``{"state_dict": …}`` /
  ``{"model": …}``. A file that is not a checkpoint gets one line saying so.
- :func:`read_lightning_checkpoint`: a PyTorch-Lightning (or any ``torch.save``) checkpoint whose pickle also
  carries non-tensor objects (hyper-parameter containers, callbacks, optimiser classes). A restricted unpickler
  admits tensors, containers, numpy arrays/scalars and dtypes; every other class is replaced by an inert
  placeholder and reported, and nothing it names is imported or called.
- :func:`load_strict`: copy a state dict into a module only if every name and shape matches, returning a
  :class:`LoadReport`; otherwise one :class:`~misato.errors.MisatoError` lists what differs.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import collections
import os
import pickle
import re
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from misato.errors import MisatoError
from misato.io import preview_names

DEFAULT_WRAPPERS = ("state_dict", "model")
"""Keys a checkpoint's tensors are often nested under (Lightning's ``state_dict``, MAE's ``model``)."""
SAFE_RECORD_CLASSES = [argparse.Namespace]
"""Plain attribute records safe loading admits besides tensors: MAE's and MAE-FAR's checkpoints (``mae_300.pth``)
store their training arguments as an ``argparse.Namespace`` (unpickling one only sets attributes)."""
_BN_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: absent from old files, meaningless at inference
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _not_a_checkpoint(path: Path, what: str) -> MisatoError:
    return MisatoError(f"{path}: not a checkpoint of {what} (it cannot be read as a safetensors or PyTorch weights file)")


def read_checkpoint(path: str | os.PathLike, what: str = "this network") -> Any:
    """The content of a checkpoint file, read safely onto the CPU.

    Args:
        path: ``.safetensors`` (read with safetensors) or any ``torch.save`` file (``weights_only=True``).
        what: the network the file should hold, for error messages (``"the MAE prior"``).
    Returns:
        ``dict[str, Tensor]`` for safetensors; for torch files whatever the file holds (tensors, containers,
        numbers, strings).
    Raises:
        MisatoError: the file is missing, is not a checkpoint, or pickles Python objects safe loading refuses
        (the message names the first such class; :func:`read_lightning_checkpoint` reads such files).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MisatoError(f"checkpoint of {what} not found: {path}")
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        with torch.serialization.safe_globals(SAFE_RECORD_CLASSES), warnings.catch_warnings():
            # a plain pickle (not torch.save) makes torch warn about its protocol before failing: the error says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - safetensors/zip/pickle errors all mean "this is not a checkpoint file"
        raise load_error(path, what, error) from None


def load_error(path: str | os.PathLike, what: str, error: BaseException) -> MisatoError:
    """The one-line error for a file that safe loading (``torch.load(weights_only=True)``, here or in a library
    such as open_clip) could not read: pickled Python objects are named, anything else is "not a checkpoint of
    ``what``". Never advises turning safe loading off."""
    refused = _REFUSED_GLOBAL.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if refused is None:
        return _not_a_checkpoint(Path(path), what)
    return MisatoError(
        f"{path}: holds pickled Python objects besides tensors ({refused[1]}), which safe loading refuses; "
        "save only the state dict (torch.save(model.state_dict(), FILE)) or convert it to .safetensors"
    )


def unwrap_state_dict(content: Any, source: str, what: str = "this network",
                      wrappers: Sequence[str] = DEFAULT_WRAPPERS) -> dict:
    """The tensors of ``content``: the mapping itself, or the first of ``wrappers`` it holds as a mapping.

    Raises:
        MisatoError: what is found is not a mapping of names to tensors.
    """
    import torch

    if isinstance(content, Mapping):
        for key in wrappers:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content or not all(torch.is_tensor(v) for v in content.values()):
        nested = f" (optionally under {' or '.join(repr(k) for k in wrappers)})" if wrappers else ""
        raise MisatoError(f"{source}: not a checkpoint of {what}: expected a state dict of tensors{nested}")
    return dict(content)


def read_state_dict(path: str | os.PathLike, what: str = "this network",
                    wrappers: Sequence[str] = DEFAULT_WRAPPERS) -> dict:
    """``{name: tensor}`` of a checkpoint file (see :func:`read_checkpoint`), unwrapped from the first of
    ``wrappers`` found (pass ``()`` to take the file's top level as it is).

    Raises:
        MisatoError: missing file, not a checkpoint, refused pickled objects, or no state dict of tensors.
    """
    return unwrap_state_dict(read_checkpoint(path, what), str(path), what, wrappers)


# --------------------------------------------------------------------------------- restricted unpickling


class RefusedObject(dict):
    """Stands in for an object of a class the restricted unpickler refused; keeps the state pickled for it
    (dict items, list items, ``__setstate__`` state, constructor arguments) as plain data, runs no code."""

    refused_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.arguments = args
        self.items_appended: list = []
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, value: Any) -> None:
        self.items_appended.append(value)

    def extend(self, values: Any) -> None:
        self.items_appended.extend(values)

    def __repr__(self) -> str:
        return f"<refused {self.refused_class}>"


def data_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) → object`` the restricted unpickler may hand to pickle (tensor rebuilders, containers,
    numpy reconstruction): none of them runs code named by the file."""
    import builtins
    import codecs

    import numpy as np
    import torch

    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    admitted: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch", "Tensor"): torch.Tensor,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("_codecs", "encode"): codecs.encode,  # numpy scalars pickle their bytes through it
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in ("set", "frozenset", "slice", "complex", "range"):
        admitted["builtins", name] = getattr(builtins, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        admitted[module, "_reconstruct"] = multiarray._reconstruct
        admitted[module, "scalar"] = multiarray.scalar
    return admitted


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits :func:`data_globals`, torch dtypes and numpy dtype classes; anything else becomes a
    :class:`RefusedObject` subclass named after it, recorded in the class attribute ``refused``."""

    refused: set[str] = set()
    admitted: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str):
        import numpy as np
        import torch

        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # protocol-2 names
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # (torch.save writes __builtin__.set)
        if (module, name) in self.admitted:
            return self.admitted[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "numpy.dtypes" and isinstance(getattr(np.dtypes, name, None), type):
            return getattr(np.dtypes, name)
        qualified = f"{module}.{name}"
        self.refused.add(qualified)
        return type(name, (RefusedObject,), {"refused_class": qualified})


def _restricted_pickle_module(refused: set[str]) -> types.ModuleType:
    """What ``torch.load(pickle_module=…)`` needs (an ``Unpickler`` class and ``load``), recording refusals
    in ``refused``."""
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"refused": refused, "admitted": data_globals()})
    module = types.ModuleType("misato_restricted_pickle")
    module.Unpickler = unpickler
    module.load = lambda stream, **kwargs: unpickler(stream, **kwargs).load()
    return module


@dataclass
class PickledCheckpoint:
    """A checkpoint read by :func:`read_lightning_checkpoint`.

    Attributes:
        content: the whole unpickled object (refused objects appear as :class:`RefusedObject`).
        state_dict: ``{name: tensor}`` found under the first of the requested wrapper keys.
        refused: sorted ``"module.Class"`` names the unpickler refused (each replaced by a placeholder).
    """

    content: Any
    state_dict: dict
    refused: list[str]


def read_lightning_checkpoint(path: str | os.PathLike, what: str = "this network",
                              wrappers: Sequence[str] = DEFAULT_WRAPPERS) -> PickledCheckpoint:
    """Read a ``torch.save`` checkpoint whose pickle carries non-tensor objects (PyTorch-Lightning's
    ``best.ckpt``: ``hyper_parameters``, ``callbacks``, ``optimizer_states``) without running its code.

    Tensors, containers, numbers, strings, numpy arrays/scalars and dtypes are rebuilt; every other class is
    never imported: its objects become :class:`RefusedObject` placeholders and the class name is listed in
    ``refused``. Safetensors and plain state-dict files are read as by :func:`read_checkpoint` (``refused`` empty).

    Args:
        path: the checkpoint file.
        what: the network it should hold, for error messages.
        wrappers: keys the state dict may be nested under (first found wins; ``()`` = the top level).
    Raises:
        MisatoError: missing file, not a checkpoint, or no state dict of tensors under ``wrappers``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MisatoError(f"checkpoint of {what} not found: {path}")
    if path.name.endswith(".safetensors"):
        content, refused = read_checkpoint(path, what), set()
    else:
        refused: set[str] = set()
        pickle_module = _restricted_pickle_module(refused)
        try:
            # weights_only=False only hands unpickling to pickle_module, whose find_class admits no code
            content = torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
        except Exception:  # noqa: BLE001 - zip/pickle errors all mean "this is not a checkpoint file"
            raise _not_a_checkpoint(path, what) from None
    return PickledCheckpoint(content, unwrap_state_dict(content, str(path), what, wrappers), sorted(refused))


# ------------------------------------------------------------------------------------------- strict loading


@dataclass
class LoadReport:
    """What a strict load found.

    Attributes:
        source: the file (or description) loaded.
        missing: module keys the file lacks.
        unexpected: file keys the module lacks.
        mismatched: ``"key (file shape) (expected (module shape))"`` entries.
        skipped: file keys deliberately ignored (not part of this module, e.g. a classifier or an encoder).
    """

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{title}: {preview_names(keys)}" for title, keys in (
            ("missing keys", self.missing), ("unexpected keys", self.unexpected),
            ("shape mismatches", self.mismatched), ("ignored keys", self.skipped)) if keys]
        status = "all keys matched" if self.ok else "not the expected weights for this network"
        return "; ".join([f"{self.source}: {status}", *parts])


def load_strict(module, state_dict: Mapping, source: str, ignored_prefixes: tuple[str, ...] = (),
                skipped: Sequence[str] = ()) -> LoadReport:
    """Load ``state_dict`` into ``module`` requiring every parameter/buffer and matching shapes.

    Args:
        module: the ``torch.nn.Module`` (it may live on the meta device: tensors are then assigned as they are).
        state_dict: ``{name: tensor}`` in the module's naming.
        source: how the report names the file.
        ignored_prefixes: file keys starting with one of these (parts the module does not use) are dropped first
            and listed as skipped.
        skipped: keys the caller already dropped (e.g. while converting names), listed in the report.
    Returns:
        The :class:`LoadReport` (``ok`` is always True on return). BatchNorm ``num_batches_tracked`` counters
        may be absent from the file (they are set to 0).
    Raises:
        MisatoError: one line naming ``source`` and listing missing keys, unexpected keys and shape mismatches.
    """
    import torch

    state = {k: v for k, v in state_dict.items() if not k.startswith(ignored_prefixes)}
    expected = module.state_dict()
    report = LoadReport(
        source=source,
        missing=sorted(k for k in expected if k not in state and not k.endswith(_BN_COUNTER)),
        unexpected=sorted(k for k in state if k not in expected),
        mismatched=sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
                          for k, v in expected.items() if k in state and state[k].shape != v.shape),
        skipped=sorted([*skipped, *(k for k in state_dict if k.startswith(ignored_prefixes))] if ignored_prefixes
                       else skipped),
    )
    if not report.ok:
        raise MisatoError(str(LoadReport(report.source, report.missing, report.unexpected, report.mismatched)))
    for key, value in expected.items():
        if key.endswith(_BN_COUNTER) and key not in state:
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    on_meta = any(tensor.is_meta for tensor in expected.values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    return report
