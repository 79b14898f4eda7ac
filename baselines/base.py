"""The method contract, the name → method table used by ``misato inpaint``, and the options adapters declare.

An adapter registers itself with :func:`register_method`, declaring its keyword options (:class:`MethodOption`),
the weights-registry entries it needs and whether a GPU is advised; ``misato inpaint`` builds its flags from
those declarations (option ``guidance_scale`` → flag ``--guidance-scale``), so adding an adapter touches one
file. Third-party methods plug in without registering in this package: through the ``misato.methods``
entry-point group (name → factory or :class:`MethodSpec`), or named on the command line as
``package.module:factory``.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
import inspect
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from misato.errors import MisatoError
from misato.io import binarize_mask

ENTRY_POINT_GROUP = "misato.methods"
OPTION_TYPES = (str, int, float, bool)


class InpaintingMethod(abc.ABC):
    """An inpainting method.

    Subclasses set ``name`` and implement :meth:`inpaint_one`; methods that batch override :meth:`inpaint`.
    ``batch_size`` is the batch the runner hands over when its caller names none (``--batch-size`` not given).
    """

    name: str = ""
    batch_size: int = 1

    @abc.abstractmethod
    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        """Fill the hole of one image.

        Args:
            image: ``uint8 [H, W, 3]`` RGB.
            mask: ``bool [H, W]``, True = hole.
            seed: the image's own seed (see :func:`image_seed`): same seed → same output.
        Returns:
            ``uint8 [H, W, 3]`` RGB of the same size.
        """

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """Fill a batch (default: one image at a time)."""
        return [self.inpaint_one(i, m, s) for i, m, s in zip(images, masks, seeds)]

    def describe(self) -> dict[str, Any]:
        """What to record in ``run.json``: options and weight hashes (override to add them)."""
        return {"method": self.name}


def checked_hole(name: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The hole of ``mask`` as ``bool [H, W]`` (True = hole, :func:`misato.io.binarize_mask`), after checking that
    ``image`` is an RGB ``uint8 [H, W, 3]`` array and ``mask`` is its size.

    Raises:
        MisatoError: naming the method ``name`` and the shapes found.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise MisatoError(f"{name}: expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    hole = binarize_mask(mask)
    if hole.shape != image.shape[:2]:
        raise MisatoError(f"{name}: mask {hole.shape} does not match image {image.shape[:2]}")
    return hole


def image_seed(seed: int, name: str) -> int:
    """A per-image seed from the run seed and the file stem, so a resumed run reproduces the same pixels."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def check_device(device: str):
    """The torch device for a ``--device`` value (cpu, cuda[:N], mps); a clear error for an unusable one."""
    import torch

    if not device.startswith(("cpu", "cuda", "mps")):
        raise MisatoError(f"--device must be cpu, cuda[:N] or mps, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MisatoError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return torch.device(device)


@dataclasses.dataclass(frozen=True)
class MethodOption:
    """One keyword option of a method's factory, exposed by ``misato inpaint`` as ``--name-with-dashes``.

    Attributes:
        name: the factory's keyword (``guidance_scale``).
        type: ``str``, ``int``, ``float`` or ``bool`` (a bool option gets ``--name`` / ``--no-name``).
        help: one line for ``--help``.
        choices: the accepted values, checked by the command line.
        default: the value used when the flag is not given (None: the factory's own default).
        bounds: inclusive ``(low, high)`` of an int or float option, checked by the command line (a value beyond
            them cannot make sense or would run without end).
    """

    name: str
    type: type
    help: str
    choices: tuple | None = None
    default: Any = None
    bounds: tuple | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} is not a Python keyword name")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of str, int, float, bool")
        if self.bounds is not None and self.type not in (int, float):
            raise ValueError(f"option {self.name!r}: only int and float options take bounds")

    @property
    def flag(self) -> str:
        """The command-line flag (``--guidance-scale``)."""
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it and what it needs.

    Attributes:
        name: the ``--method`` name.
        factory: ``factory(**options) -> InpaintingMethod``.
        options: the keyword options the factory accepts from the command line.
        weights: names of the weights-registry entries (:mod:`misato.weights`) the method needs.
        locate: for a method that finds its weights itself, ``locate() -> (path, origin) | None``; ``misato
            methods`` calls it to say whether the method is ready (default: every entry of ``weights`` found).
        description: one line for ``misato methods``.
        gpu_advised: True when a CPU run is impractically slow at benchmark scale.
    """

    name: str
    factory: Callable[..., InpaintingMethod]
    options: tuple[MethodOption, ...] = ()
    weights: tuple[str, ...] = ()
    description: str = ""
    gpu_advised: bool = False
    locate: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        names = [option.name for option in self.options]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"method {self.name!r} declares option(s) {', '.join(duplicated)} twice")

    def option(self, name: str) -> MethodOption | None:
        """The declared option called ``name``, or None."""
        return next((option for option in self.options if option.name == name), None)

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` (keyword name → value, None = not given) checked against the declared options — an
        undeclared one is refused, choices and bounds are checked — with declared defaults filling the rest."""
        given = {name: value for name, value in given.items() if value is not None}
        foreign = [name for name in given if self.option(name) is None]
        if foreign:
            flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
            raise MisatoError(f"method {self.name} takes no {flags}")
        for name, value in given.items():
            option = self.option(name)
            if option.choices is not None and value not in option.choices:
                raise MisatoError(f"{option.flag} must be one of {', '.join(map(str, option.choices))}, "
                                  f"got {value!r}")
            if option.bounds is not None and not option.bounds[0] <= value <= option.bounds[1]:
                raise MisatoError(f"{option.flag} of {self.name} must be from {option.bounds[0]} to "
                                  f"{option.bounds[1]}, got {value}")
        defaults = {option.name: option.default for option in self.options if option.default is not None}
        return {**defaults, **given}

    def status(self) -> dict[str, Any]:
        """Whether the method is ready here (its weights found where the registry looks), as ``misato methods``
        reports it: ``method``, ``description``, ``flags``, ``weights`` (file names), ``model_folder`` (True when
        the weights come only from a ``--model`` folder, which the listing cannot check), ``gpu_advised``,
        ``ready`` (every registry file found; vacuous for a ``model_folder`` method), ``found`` (paths),
        ``problem`` (a found file failing its hash check)."""
        from misato.weights import find_local, get_entry

        entries = [get_entry(name) for name in self.weights]
        problem = None
        try:
            if self.locate is not None:
                found = self.locate()
                ready, where = found is not None, str(found[0]) if found is not None else None
            else:
                located = [find_local(entry) for entry in entries]
                ready = all(located)
                where = ", ".join(str(found.path) for found in located if found) or None
        except MisatoError as error:  # a found file failing its hash check: reported, not fatal for the listing
            ready, where, problem = False, None, str(error)
        return {
            "method": self.name,
            "description": self.description,
            "flags": [option.flag for option in self.options],
            "weights": [entry.filename for entry in entries],
            "model_folder": not entries and self.option("model") is not None,
            "gpu_advised": self.gpu_advised,
            "ready": ready,
            "found": where,
            "problem": problem,
        }


WEIGHTS_OPTION = MethodOption("weights", str, "weight file to load (explicit: trusted, hashed for the record)")
DEVICE_OPTION = MethodOption("device", str, "torch device: cpu (default), cuda[:N] or mps")
"""The ``--weights`` and ``--device`` options every native adapter declares."""

_SPECS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    factory: Callable[..., InpaintingMethod],
    *,
    options: tuple[MethodOption, ...] | list[MethodOption] = (),
    weights: tuple[str, ...] | list[str] = (),
    description: str = "",
    gpu_advised: bool = False,
    locate: Callable[[], Any] | None = None,
) -> MethodSpec:
    """Make ``factory(**options)`` available as method ``name``.

    Raises:
        MisatoError: ``name`` is already registered (a plug-in may not silently replace a method).
    """
    spec = MethodSpec(name, factory, tuple(options), tuple(weights), description, gpu_advised, locate)
    _add(spec)
    return spec


def _add(spec: MethodSpec) -> None:
    if spec.name in _SPECS:
        raise MisatoError(f"method {spec.name!r} is registered twice (second time by {_origin(spec.factory)})")
    _SPECS[spec.name] = spec


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _as_spec(obj: Any, name: str) -> MethodSpec:
    """A :class:`MethodSpec` for a plug-in object: a spec (renamed to ``name``) or a bare factory."""
    if isinstance(obj, MethodSpec):
        return dataclasses.replace(obj, name=name)
    if callable(obj):
        return MethodSpec(name, obj, description=(inspect.getdoc(obj) or "").split("\n")[0])
    raise MisatoError(f"method {name!r}: {obj!r} is neither a factory nor a baselines.base.MethodSpec")


_LOADED = False


def _load_adapters() -> None:
    """Import the built-in adapter modules (cheap: no torch at import) and the installed plug-ins, once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import baselines.opencv  # noqa: F401  (telea, navier-stokes)
    import baselines.diffusion  # noqa: F401  (asuka, sd, sd-text, sd-prompt)
    import baselines.torchscript  # noqa: F401  (torchscript)
    import baselines.lama  # noqa: F401  (lama)
    import baselines.maefar  # noqa: F401  (maefar)
    import baselines.mat  # noqa: F401  (mat)
    import baselines.comod  # noqa: F401  (comod)
    import baselines.flux  # noqa: F401  (asuka-flux, flux-fill)
    import baselines.command  # noqa: F401  (command)
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = entry_point.load()
        except Exception as error:  # a broken plug-in must name itself, not crash with its own traceback
            raise MisatoError(f"plug-in method {entry_point.name!r} ({entry_point.value}) failed to load: "
                              f"{type(error).__name__}: {error}") from None
        _add(_as_spec(obj, entry_point.name))


def method_specs() -> dict[str, MethodSpec]:
    """Every registered method (built-in and entry-point plug-ins), by name."""
    _load_adapters()
    return dict(sorted(_SPECS.items()))


def available_methods() -> list[str]:
    """Names accepted by :func:`create_method` (besides ``package.module:factory`` paths)."""
    return list(method_specs())


def get_spec(name: str) -> MethodSpec:
    """The spec of method ``name``: a registered name, or ``package.module:factory`` imported on the spot.

    Raises:
        MisatoError: unknown name (the message lists the known ones) or a path that does not import.
    """
    specs = method_specs()
    if name in specs:
        return specs[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError, ValueError) as error:
            raise MisatoError(f"--method {name}: cannot import it ({type(error).__name__}: {error})") from None
        return _as_spec(obj, name)
    raise MisatoError(f"unknown method {name!r}; available: {', '.join(specs)} (or package.module:factory)")


def create_method(name: str, **options: Any) -> InpaintingMethod:
    """Instantiate method ``name`` (see :func:`get_spec`) with adapter-specific keyword ``options``.

    A ``device`` option is checked first, so an unusable ``--device`` is refused before any weights are looked
    for or loaded.

    Raises:
        MisatoError: unknown method, unusable device, a ``package.module:factory`` that fails when called (the
        message names the exception and where it was raised), or the factory did not return an
        :class:`InpaintingMethod`.
    """
    spec = get_spec(name)
    if options.get("device") is not None:
        check_device(str(options["device"]))
    if name in method_specs():
        method = spec.factory(**options)
    else:  # the user's own code: its failure is one line saying where, like every other bad input
        try:
            method = spec.factory(**options)
        except MisatoError:
            raise
        except Exception as error:  # noqa: BLE001 - any exception of a plug-in factory
            frame = traceback.extract_tb(error.__traceback__)[-1]
            raise MisatoError(f"--method {name}: calling it failed with {type(error).__name__}: {error} "
                              f"(at {frame.filename}:{frame.lineno})") from None
    if not isinstance(method, InpaintingMethod):
        raise MisatoError(f"method {name!r}: its factory returned {type(method).__name__}, "
                          "not a baselines.InpaintingMethod")
    if not method.name:
        method.name = name
    return method
