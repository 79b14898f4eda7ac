"""The one provenance record written next to every output: toolkit and package versions, protocol, weight hashes.

``build.json``, the runner's ``run.json``, the demo's ``demo.json``, ``assembly.json`` (and the evaluator's
``summary.json``) store :func:`provenance` under the key ``"provenance"``, so every output says in the same words
what produced it.
"""
from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from misato import __version__

BASE_PACKAGES = ("numpy", "pillow", "torch")
"""Recorded in every provenance record; callers add the packages their numbers depend on."""
NOT_INSTALLED = "not installed"


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """``{distribution name: installed version}`` (``"not installed"`` when absent), sorted by name."""
    versions = {}
    for package in sorted(set(packages)):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = NOT_INSTALLED
    return versions


def provenance(packages: Iterable[str] = (), protocol: str | None = None,
               weights: Mapping[str, str | Mapping[str, str]] | None = None) -> dict[str, Any]:
    """What produced an output, as JSON-ready data.

    Args:
        packages: PyPI distribution names whose versions matter for this output (added to :data:`BASE_PACKAGES`).
        protocol: the evaluation protocol, when there is one.
        weights: ``{component: sha256}`` (or ``{component: {file: sha256}}`` for a folder) of the weights used.
    Returns:
        ``{"misato_version", "python", "packages": {name: version}}`` plus ``"protocol"`` and ``"weights_sha256"``
        when given. No timestamps or paths, so equal runs give equal records.
    """
    record: dict[str, Any] = {
        "misato_version": __version__,
        "python": platform.python_version(),
        "packages": package_versions([*BASE_PACKAGES, *packages]),
    }
    if protocol is not None:
        record["protocol"] = protocol
    if weights is not None:
        record["weights_sha256"] = {name: weights[name] for name in sorted(weights)}
    return record
