"""Raw-dataset readers on synthetic trees in each real layout."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from misato.build.coco import load_coco
from misato.build.readers import (
    read_coco,
    read_flickr_landscape,
    read_image_folder,
    read_matterport,
    read_megadepth,
)
from misato.errors import MisatoError
from misato.io import decode_image
from tests.misato.test_build_support import (
    jpeg_bytes,
    photo,
    write_coco,
    write_flickr,
    write_matterport,
    write_megadepth,
)


def test_flickr_flat_sorted_and_parent_folder_works(tmp_path):
    write_flickr(tmp_path / "flickr" / "images", n=5)
    (tmp_path / "flickr" / "images" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "flickr" / "images" / "notes.txt").write_text("not an image")
    direct = read_flickr_landscape(tmp_path / "flickr" / "images")
    assert [r.relative_path for r in direct] == [f"{i:05d}.jpg" for i in range(5)]
    from_parent = read_flickr_landscape(tmp_path / "flickr")
    assert [r.relative_path for r in from_parent] == [f"images/{i:05d}.jpg" for i in range(5)]
    assert direct[2].read_bytes() == (tmp_path / "flickr/images/00002.jpg").read_bytes()


def test_matterport_zipped_and_unzipped_colour_only(tmp_path):
    root = write_matterport(tmp_path / "mp", houses_zipped=2, houses_unzipped=1, per_house=3)
    records = read_matterport(root)
    paths = [r.relative_path for r in records]
    assert len(records) == 9 and paths == sorted(paths)
    assert all("_i" in p.rsplit("/", 1)[1] and p.endswith(".jpg") for p in paths)
    zipped = [r for r in records if "::" in r.relative_path]
    assert len(zipped) == 6
    archive, member = zipped[0].relative_path.split("::")
    with zipfile.ZipFile(root / archive) as handle:
        assert zipped[0].read_bytes() == handle.read(member)
    # a folder inside the dataset works, with paths relative to it
    inner = read_matterport(root / "v1" / "scans" / "house0")
    assert [r.relative_path for r in inner][0].startswith("undistorted_color_images.zip::house0/")


def test_matterport_prefers_unzipped_copy_of_a_house(tmp_path):
    root = write_matterport(tmp_path / "mp", houses_zipped=1, houses_unzipped=0, per_house=2)
    house = root / "v1" / "scans" / "house0"
    with zipfile.ZipFile(house / "undistorted_color_images.zip") as handle:
        handle.extractall(house)
    records = read_matterport(root)
    assert len(records) == 2 and all("::" not in r.relative_path for r in records)


def test_matterport_bad_zip_and_no_images(tmp_path):
    bad = tmp_path / "bad" / "v1" / "scans" / "h" / "undistorted_color_images.zip"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a zip")
    with pytest.raises(MisatoError, match="not a readable zip"):
        read_matterport(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="Matterport3D: no images"):
        read_matterport(tmp_path / "empty")


def test_megadepth_only_dense_imgs(tmp_path):
    root = write_megadepth(tmp_path / "md", scenes=2, per_scene=3)
    (root / "MegaDepth_v1" / "0000" / "other").mkdir()
    Image.fromarray(photo(1)).save(root / "MegaDepth_v1" / "0000" / "other" / "x.jpg")
    records = read_megadepth(root)
    assert len(records) == 6
    assert all("/imgs/" in r.relative_path and "/dense" in r.relative_path for r in records)
    assert read_megadepth(root / "MegaDepth_v1" / "0001")[0].relative_path.startswith("dense")


def test_coco_matches_annotations_and_lists_unannotated(tmp_path):
    images, annotations = write_coco(tmp_path / "coco", n=4)
    Image.fromarray(photo(9)).save(images / "COCO_train2014_000000999999.jpg")
    records, unannotated = read_coco(tmp_path / "coco", load_coco(annotations))
    assert [r.coco_image_id for r in records] == [1000, 1001, 1002, 1003]
    assert records[0].expected_size == (40, 56)
    assert unannotated == ["train2014/COCO_train2014_000000999999.jpg"]


def test_coco_json_that_does_not_match_the_images(tmp_path):
    images, _ = write_coco(tmp_path / "coco", n=2)
    _, other = write_coco(tmp_path / "other", n=2, seed=5)
    other_json = other.read_text().replace("COCO_train2014_00000000100", "COCO_train2014_00000000200")
    other.write_text(other_json)
    with pytest.raises(MisatoError, match="none of the 2 images"):
        read_coco(images, load_coco(other))
    with pytest.raises(MisatoError, match="not a valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        load_coco(tmp_path / "broken.json")
    with pytest.raises(MisatoError, match="not found"):
        load_coco(tmp_path / "missing.json")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(MisatoError, match="folder not found"):
        read_flickr_landscape(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="no images"):
        read_image_folder(tmp_path / "empty", "mine")


def test_decode_image_bytes_modes_and_failures():
    """Raw photos arrive as bytes (zip members too): misato.io.decode_image applies the file rules to them."""
    rgb = decode_image(jpeg_bytes(photo(3)))
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 48, 3)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (3, 4, 3) and (decoded == gray[..., None]).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 100
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    with pytest.raises(MisatoError, match="member.png: has transparent"):
        decode_image(buffer.getvalue(), "member.png")
    with pytest.raises(MisatoError, match="cannot decode"):
        decode_image(b"\xff\xd8\xff garbage")
    with pytest.raises(MisatoError, match="cannot decode"):
        decode_image(jpeg_bytes(photo(4))[:200])
