"""MISATO-Bench base layer: image/mask I/O, the MISATO folder layout, the weights registry.

The other packages (`evaluate`, `baselines`, `asuka`) build on this one; `misato` itself imports none of
them except in its CLI modules (`misato.cli*`).
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("misato-bench")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from misato.errors import MisatoError  # noqa: E402

__all__ = ["MisatoError", "__version__"]
