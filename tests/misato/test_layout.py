import pytest

from misato.errors import MisatoError
from misato.layout import domain_of_name, open_pairs
from tests.helpers import write_misato_folder


def test_domain_ranges():
    assert [domain_of_name(n) for n in ("0000", "0499", "0500", "1000", "1499", "1999", "2000", "cat")] == [
        "landscape", "landscape", "indoor", "building", "building", "background", "unknown", "unknown",
    ]


def test_open_misato_root(tmp_path):
    root = write_misato_folder(tmp_path / "m", names=["0001", "0600", "1700"])
    pairs = open_pairs(root)
    assert pairs.names == ["0001", "0600", "1700"]
    assert pairs.domains == {"0001": "landscape", "0600": "indoor", "1700": "background"}


def test_manifest_overrides_domains(tmp_path):
    root = write_misato_folder(tmp_path / "m", names=["0001", "0002"])
    (root / "manifest.csv").write_text("name,domain\n0001,mine\n0002,yours\n")
    assert open_pairs(root).domains == {"0001": "mine", "0002": "yours"}


def test_1024_release_mask_prefix(tmp_path):
    root = write_misato_folder(tmp_path / "m", names=["0001", "0002"])
    for path in list((root / "mask").iterdir()):
        path.rename(path.with_name("00" + path.name))
    pairs = open_pairs(root)
    assert pairs.masks["0001"].name == "000001.png"


def test_plain_folder_needs_mask(tmp_path):
    root = write_misato_folder(tmp_path / "m")
    with pytest.raises(MisatoError, match="--mask"):
        open_pairs(root / "image")
    assert len(open_pairs(root / "image", root / "mask")) == 4


def test_unpaired_masks_are_listed(tmp_path):
    root = write_misato_folder(tmp_path / "m")
    (root / "mask" / "0002.png").unlink()
    with pytest.raises(MisatoError, match="0002"):
        open_pairs(root)
