from importlib import metadata

import numpy as np

from misato import __version__
from misato.provenance import package_versions, provenance


def test_provenance_records_real_versions_protocol_and_weights():
    record = provenance(("lpips", "no-such-package-xyz"), protocol="asuka", weights={"b": "22", "a": {"f": "11"}})
    assert record["misato_version"] == __version__
    assert record["packages"]["numpy"] == np.__version__
    assert record["packages"]["lpips"] == metadata.version("lpips")  # lpips has no __version__ attribute
    assert record["packages"]["no-such-package-xyz"] == "not installed"
    assert list(record["packages"]) == sorted(record["packages"])
    assert record["protocol"] == "asuka" and list(record["weights_sha256"]) == ["a", "b"]
    assert set(provenance()) == {"misato_version", "python", "packages"}
    assert package_versions(["torch", "torch"]) == {"torch": metadata.version("torch")}
