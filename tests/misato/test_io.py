import os

import numpy as np
import pytest
from PIL import Image

from misato.errors import MisatoError
from misato.io import (
    atomic_write_text,
    binarize_mask,
    list_images,
    pair_by_stem,
    read_image,
    read_mask,
    read_mask_uint8,
    write_image,
    write_mask,
)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path, rgb):
    write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_grayscale_is_replicated_to_rgb(tmp_path, rgb):
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (10, 12, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], rgb[..., 0])


def test_palette_image_is_converted(tmp_path, rgb):
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_opaque_alpha_is_dropped_and_transparency_refused(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), rgb)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    with pytest.raises(MisatoError, match="transparent.png.*transparent pixels"):
        read_image(tmp_path / "transparent.png")


def test_16bit_images_are_refused(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "rgb16.png"), np.full((4, 4, 3), 40000, np.uint16))
    cv2.imwrite(str(tmp_path / "gray16.png"), np.full((4, 4), 40000, np.uint16))
    for name in ("rgb16.png", "gray16.png"):
        with pytest.raises(MisatoError, match=f"{name}.*16-bit"):
            read_image(tmp_path / name)


def test_corrupt_and_missing_files_name_the_file(tmp_path, rgb):
    write_image(tmp_path / "ok.png", rgb)
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:50])
    with pytest.raises(MisatoError, match="bad.png.*cannot decode"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MisatoError, match="text.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(MisatoError, match="not found.*nope.png"):
        read_image(tmp_path / "nope.png")


def test_mask_polarity_and_binarisation(tmp_path):
    mask = np.zeros((6, 6), bool)
    mask[1:3, 2:5] = True
    write_mask(tmp_path / "m.png", mask)
    stored = np.asarray(Image.open(tmp_path / "m.png"))
    assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
    assert stored[1, 2] == 255 and stored[0, 0] == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


def test_soft_mask_binarises_at_128_and_keeps_raw_values(tmp_path):
    values = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(values).save(tmp_path / "soft.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "soft.png"), [[False, False, True, True]])
    np.testing.assert_array_equal(read_mask_uint8(tmp_path / "soft.png"), values)


def test_zero_one_masks_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).save(tmp_path / "01.png")
    with pytest.raises(MisatoError, match="01.png.*0/1"):
        read_mask(tmp_path / "01.png")


def test_colour_masks(tmp_path):
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), grey == 255)
    bad = np.stack([grey, grey, 255 - grey], axis=2)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(MisatoError, match="bad.png.*channels differ"):
        read_mask(tmp_path / "bad.png")


def test_binarize_mask_dtypes():
    np.testing.assert_array_equal(binarize_mask(np.array([0.2, 0.5, 1.0])), [False, True, True])
    np.testing.assert_array_equal(binarize_mask(np.array([True, False])), [True, False])
    with pytest.raises(MisatoError):
        binarize_mask(np.array([0.0, 2.0]))
    with pytest.raises(MisatoError):
        binarize_mask(np.array([1, 2], np.int64))


def test_list_images_errors(tmp_path, rgb):
    with pytest.raises(MisatoError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="holds no"):
        list_images(tmp_path / "empty")
    write_image(tmp_path / "x" / "0001.png", rgb)
    (tmp_path / "x" / "0001.jpg").write_bytes(b"")
    with pytest.raises(MisatoError, match="share a name stem"):
        list_images(tmp_path / "x")


def test_pair_by_stem_lists_missing_and_extra():
    gt = {"a": None, "b": None, "c": None}
    pred = {"a": None, "b": None, "z": None, "y": None}
    with pytest.raises(MisatoError, match=r"^1 ground-truth image without a prediction: c; 2 predictions without a "
                                          r"ground-truth image: y, z$"):
        pair_by_stem(gt, pred, "ground-truth image", "prediction")
    assert pair_by_stem(gt, dict(gt), "x", "y") == ["a", "b", "c"]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "sub" / "f.txt", "hello")
    assert (tmp_path / "sub" / "f.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.txt"]


def test_a_long_file_name_still_has_room_for_its_temporary_name(tmp_path):
    """The temporary name is 14 bytes longer than the file's (as tempfile.mkstemp's): a 241-byte name, legal on
    a 255-byte file system, is written."""
    name = "n" * 237 + ".png"
    atomic_write_text(tmp_path / name, "hello")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_temporary_name_another_writer_holds_is_left_to_it(tmp_path, monkeypatch):
    import secrets

    tokens = iter(["0badcafe", "0badcafe", "600dcafe"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    atomic_write_text(tmp_path / "f.txt", "first")  # holds .f.txt.0badcafe.tmp, then renames it away
    (tmp_path / ".f.txt.0badcafe.tmp").write_text("another writer's")
    atomic_write_text(tmp_path / "f.txt", "second")
    assert (tmp_path / ".f.txt.0badcafe.tmp").read_text() == "another writer's"
    assert (tmp_path / "f.txt").read_text() == "second"


def test_a_temporary_file_that_cannot_be_made_is_reported_as_the_file_asked_for(tmp_path, monkeypatch):
    import errno

    real_open = os.open

    def refuse_temporary(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_temporary)
    with pytest.raises(OSError) as error:
        atomic_write_text(tmp_path / "f.txt", "hello")
    assert error.value.filename == str(tmp_path / "f.txt") and error.value.errno == errno.EACCES


def test_image_names_that_cannot_be_recorded_or_read_are_refused_naming_them(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "0001.png", np.zeros((8, 8, 3), np.uint8))
    (folder / "0002.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(MisatoError, match=r"0002.png: a broken link, not an image file$"):
        list_images(folder)
    (folder / "0002.png").unlink()
    (folder / "0003.png").mkdir()
    with pytest.raises(MisatoError, match=r"0003.png: a folder, not an image file$"):
        list_images(folder)
    (folder / "0003.png").rmdir()
    undecodable = os.fsdecode(b"\xff\xfe.png")
    write_image(folder / undecodable, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(MisatoError, match=r"the file name b'\\xff\\xfe.png' is not valid UTF-8; rename it"):
        list_images(folder)


def test_atomic_writes_give_a_new_file_the_usual_permissions(tmp_path):
    umask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "hello")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
