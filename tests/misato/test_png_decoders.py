"""misato.io decodes well-formed 8-bit grey/RGB/RGBA PNGs with OpenCV and everything else with Pillow: the two
routes must give the same pixels and the same errors (the Pillow route is forced by disabling the fast one)."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from misato import io as misato_io
from misato.errors import MisatoError


def pil_png(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def cv2_png(array: np.ndarray) -> bytes:
    bgr = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[2] == 3
                                                     else cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                      cv2.IMWRITE_PNG_STRATEGY_RLE])[1].tobytes()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk(data: bytes, new: bytes) -> bytes:
    """``data`` with the chunk ``new`` inserted right after IHDR."""
    return data[:33] + new + data[33:]


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, size=(37, 29), dtype=np.uint8)
OPAQUE = np.concatenate([RGB, np.full((37, 29, 1), 255, np.uint8)], axis=2)
INFO = PngImagePlugin.PngInfo()
INFO.add_text("Software", "test")

FAST = {  # files the OpenCV route takes
    "rgb": pil_png(RGB),
    "rgb level 1 (opencv)": cv2_png(RGB),
    "grey": pil_png(GREY),
    "grey (opencv)": cv2_png(GREY),
    "rgba opaque": pil_png(OPAQUE),
    "rgba opaque (opencv)": cv2_png(OPAQUE),
    "rgb with dpi, gamma, text": with_chunk(pil_png(RGB, dpi=(72, 72), pnginfo=INFO), chunk(b"gAMA", struct.pack(">I", 45455))),
    "rgb with an unknown ancillary chunk": with_chunk(pil_png(RGB), chunk(b"prIv", b"anything")),
}
SLOW = {  # files left to Pillow
    "palette": pil_png(RGB, "P"),
    "palette with transparency": pil_png(RGB, "P", transparency=3),
    "grey + alpha": pil_png(np.stack([GREY, np.full_like(GREY, 255)], axis=2), "LA"),
    "1-bit": pil_png(GREY > 128),
    "rgb with a transparent colour (tRNS)": pil_png(RGB, transparency=(1, 2, 3)),
    "rgb with an ICC profile": pil_png(RGB, icc_profile=b"\0" * 128),
    "rgb with trailing bytes": pil_png(RGB) + b"junk",
    "jpeg": cv2.imencode(".jpg", RGB)[1].tobytes(),
}


def pillow_route(monkeypatch):
    monkeypatch.setattr(misato_io, "_png_fast_route", lambda data: None)


@pytest.mark.parametrize("name", [*FAST, *SLOW])
def test_both_routes_give_the_same_pixels_for_images_and_masks(tmp_path, monkeypatch, name):
    data = {**FAST, **SLOW}[name]
    assert (misato_io._png_fast_route(data) is not None) == (name in FAST)
    path = tmp_path / "file.png"
    path.write_bytes(data)
    fast_image = misato_io.read_image(path)
    fast_mask = misato_io.read_mask_uint8(path) if name.startswith(("grey", "1-bit")) else None
    pillow_route(monkeypatch)
    np.testing.assert_array_equal(fast_image, misato_io.read_image(path))
    assert fast_image.dtype == np.uint8 and fast_image.shape == (37, 29, 3) and fast_image.flags.writeable
    if fast_mask is not None:
        np.testing.assert_array_equal(fast_mask, misato_io.read_mask_uint8(path))


def corrupted() -> dict[str, bytes]:
    good = pil_png(RGB)
    idat = good.index(b"IDAT") - 4
    length = struct.unpack_from(">I", good, idat)[0]
    body = bytearray(good[idat + 8 : idat + 8 + length])
    body[len(body) // 2] ^= 0xFF  # a damaged deflate stream under a correct CRC
    damaged = good[:idat] + chunk(b"IDAT", bytes(body)) + good[idat + 12 + length :]
    gama = chunk(b"gAMA", struct.pack(">I", 45455))
    return {
        "truncated": good[: len(good) // 2],
        "bad IDAT CRC": good[: idat + 8 + length] + b"\0\0\0\0" + good[idat + 12 + length :],
        "bad ancillary CRC": with_chunk(good, gama[:-4] + b"\0\0\0\0"),
        "short gAMA": with_chunk(good, chunk(b"gAMA", b"\0\0")),
        "damaged deflate stream": damaged,
        "no IEND": good[:-12],
        "transparent": pil_png(np.concatenate([RGB, np.full((37, 29, 1), 7, np.uint8)], axis=2)),
        "colour mask": pil_png(RGB),
    }


@pytest.mark.parametrize("name", list(corrupted()))
def test_both_routes_raise_the_same_errors(tmp_path, monkeypatch, name):
    path = tmp_path / "file.png"
    path.write_bytes(corrupted()[name])

    def outcomes():
        found = []
        for read in (misato_io.read_image, misato_io.read_mask_uint8):
            try:
                read(path)
                found.append("read")
            except MisatoError as error:
                found.append(str(error))
        return found

    fast = outcomes()
    pillow_route(monkeypatch)
    assert fast == outcomes()
    assert fast[1] != "read"  # every case is a bad mask; Pillow reads three of them as images
    assert (fast[0] == "read") == (name in ("bad IDAT CRC", "no IEND", "colour mask"))
