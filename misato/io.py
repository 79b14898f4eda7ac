"""Image and mask files: reading with explicit format checks, the one mask binariser, atomic writes.

Conventions (DESIGN.md): images are 8-bit RGB, in memory ``uint8 [H, W, 3]``; masks are boolean
``[H, W]`` with **True = hole**, on disk 8-bit single-channel PNG with 255 = hole.

Conversions done here, each on purpose:
- grayscale (``L``) and palette (``P``) images become RGB by replicating/looking up colours;
- an alpha channel that is fully opaque is dropped; any transparency is refused (what is behind it is unknown);
- 16-bit images are refused (Pillow would silently drop the low byte of 16-bit RGB PNGs);
- masks may be stored as ``L``, ``RGB`` with equal channels, or palette; values are binarised at 128.

Decoding: well-formed 8-bit grey, RGB and RGBA PNGs (the files MISATO and the runners write) are decoded by OpenCV,
which releases the GIL and is about twice as fast as Pillow; every other file, and any PNG OpenCV cannot read, goes
through Pillow. The route is only taken where both decoders give the same pixels and Pillow raises no error
(:func:`_png_fast_route`), so which decoder ran never shows in the result or in an error message.
"""
from __future__ import annotations

import io
import os
import secrets
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from misato.errors import MisatoError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File endings accepted as images or masks (case-insensitive)."""

MASK_THRESHOLD = 128
"""uint8 mask values >= this are holes (the official scripts binarise mask/255 at 0.5)."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FAST_PNG_CHANNELS = {0: 1, 2: 3, 6: 4}
"""PNG colour types decoded by OpenCV (grey, RGB, RGBA) → the channels it returns (BGR order)."""
_FAST_PNG_MIN_LENGTHS = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"tEXt": 0}
"""Ancillary chunks Pillow parses that the fast route accepts, with the length below which Pillow refuses them."""
_FAST_PNG_MAX_TEXT = 1 << 20
"""At most this many bytes of ``tEXt`` (Pillow refuses text beyond its own, much larger, memory limit)."""


def _png_fast_route(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, channels)`` when ``data`` is a PNG that OpenCV and Pillow decode to the same pixels and
    that Pillow accepts; None otherwise (the caller then decodes it with Pillow, errors included).

    Accepted: the signature; IHDR first (13 bytes: 8 bits, grey/RGB/RGBA, deflate, filter method 0, not
    interlaced, at most Pillow's ``MAX_IMAGE_PIXELS``); consecutive IDAT chunks; IEND last with nothing after it;
    besides these only ancillary chunks that Pillow skips, or parses without error (:data:`_FAST_PNG_MIN_LENGTHS`);
    no ``tRNS`` (a transparent colour), ``iCCP``/``zTXt``/``iTXt``/``eXIf`` or APNG chunks; every chunk inside the
    data with a correct CRC.
    """
    from PIL import PngImagePlugin

    view = memoryview(data)
    if len(data) < 45 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or data[8:12] != b"\0\0\0\r":
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    channels = _FAST_PNG_CHANNELS.get(colour)
    if (depth != 8 or channels is None or compression or filtering or interlace or not width or not height
            or (Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS)):
        return None
    position, idat_state, text = 8, 0, 0  # idat_state: 0 before the IDAT run, 1 inside it, 2 after it
    while position + 12 <= len(data):
        length, = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data) or zlib.crc32(view[position + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"IDAT":
            if idat_state == 2:
                return None
            idat_state = 1
        else:
            idat_state = 2 if idat_state else 0
            if kind == b"IEND":
                return (height, width, channels) if not length and end == len(data) and idat_state == 2 else None
            if position > 8 and not (kind.isalpha() and kind[0] & 0x20):  # a second IHDR, PLTE, unknown critical
                return None
            if kind in _FAST_PNG_MIN_LENGTHS:
                if length < _FAST_PNG_MIN_LENGTHS[kind]:
                    return None
                text += length if kind == b"tEXt" else 0
                if text > _FAST_PNG_MAX_TEXT:
                    return None
            elif position > 8 and hasattr(PngImagePlugin.PngStream, f"chunk_{kind.decode('ascii')}"):
                return None  # tRNS, iCCP, zTXt, iTXt, eXIf, acTL, fcTL, fdAT, … : Pillow's own handling
        position = end
    return None


def _decode_png_fast(data: bytes) -> np.ndarray | None:
    """``data`` decoded by OpenCV where :func:`_png_fast_route` allows it: ``uint8`` ``[H, W]`` (grey),
    ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA), in RGB order; None where it does not (or OpenCV fails)."""
    import cv2

    shape = _png_fast_route(data)
    if shape is None:
        return None
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    height, width, channels = shape
    if decoded is None or decoded.dtype != np.uint8 or decoded.shape[:2] != (height, width) or (
            decoded.shape[2:] or (1,))[0] != channels:
        return None
    if channels == 1:
        return decoded
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)


def _png_bit_depth(data: bytes) -> int | None:
    """The bit depth from a PNG's IHDR chunk, or None if the data is not a PNG."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">B", data[24:25])[0]


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise MisatoError(f"{what} not found: {path}")
    return path.read_bytes()


def _open_8bit(data: bytes, source: str) -> Image.Image:
    """Fully decode image bytes, refusing corrupt and 16/32-bit data with a message naming ``source``."""
    if _png_bit_depth(data) == 16:
        raise MisatoError(
            f"{source}: 16-bit PNG; MISATO works on 8-bit images. "
            "Convert it to 8 bits per channel first (e.g. round(value / 257))."
        )
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:  # its message holds a memory address: not reproducible
        raise MisatoError(f"{source}: cannot decode (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise MisatoError(f"{source}: cannot decode ({error})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise MisatoError(f"{source}: {image.mode} (16/32-bit) image; convert it to 8 bits per channel first.")
    return image


def _drop_opaque_alpha(image: Image.Image, source: str) -> Image.Image:
    """RGBA/LA → RGB/L when alpha is 255 everywhere; otherwise refuse."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        _refuse_transparency(np.asarray(image.getchannel("A")), source)
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    return image


def _refuse_transparency(alpha: np.ndarray, source: str) -> None:
    """Refuse an image whose alpha channel (``uint8``) is below 255 anywhere."""
    if alpha.min() < 255:
        raise MisatoError(
            f"{source}: has transparent pixels (alpha < 255); flatten it onto a background first, "
            "since the metrics cannot know what lies behind the transparency."
        )


def _decode_fast_opaque(data: bytes, source: str) -> np.ndarray | None:
    """:func:`_decode_png_fast` with an alpha channel checked (:func:`_refuse_transparency`) and dropped:
    ``uint8 [H, W]`` or ``[H, W, 3]``; None where the fast route does not apply."""
    decoded = _decode_png_fast(data)
    if decoded is not None and decoded.ndim == 3 and decoded.shape[2] == 4:
        _refuse_transparency(decoded[..., 3], source)
        decoded = np.ascontiguousarray(decoded[..., :3])
    return decoded


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode an encoded 8-bit image (PNG, JPEG, …) as RGB, with the conversions listed in the module docstring.

    Pixels are taken in stored order (EXIF orientation is not applied).

    Args:
        data: the encoded file's bytes.
        source: how errors name the image (a path, or ``archive.zip:member``).
    Returns:
        ``uint8`` array of shape ``[H, W, 3]``, values 0–255.
    Raises:
        MisatoError: corrupt, 16-bit or partly transparent data.
    """
    fast = _decode_fast_opaque(data, source)
    if fast is not None:
        return fast if fast.ndim == 3 else np.repeat(fast[..., None], 3, axis=2)
    image = _drop_opaque_alpha(_open_8bit(data, source), source)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr: explicit, lossless for L
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit image file as RGB ``uint8 [H, W, 3]`` (see :func:`decode_image`).

    Raises:
        MisatoError: missing, corrupt, 16-bit, or partly transparent file.
    """
    path = Path(path)
    return decode_image(_read_bytes(path, "Image"), str(path))


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """The one place a mask becomes boolean (True = hole).

    Args:
        mask: ``bool`` (returned as is), ``uint8`` 0–255 (hole where >= 128), or float in [0, 1] (hole where >= 0.5).
    Returns:
        ``bool`` array of the same shape.
    """
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype == np.uint8:
        return mask >= MASK_THRESHOLD
    if np.issubdtype(mask.dtype, np.floating):
        if mask.size and (mask.min() < 0.0 or mask.max() > 1.0):
            raise MisatoError(f"float mask values must lie in [0, 1], got [{mask.min()}, {mask.max()}]")
        return mask >= 0.5
    raise MisatoError(f"unsupported mask dtype {mask.dtype}; use bool, uint8 (255 = hole) or float in [0, 1]")


def read_mask_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as single-channel 8-bit values, without binarising (for soft-mask metrics such as Grad).

    Returns:
        ``uint8`` array ``[H, W]``, 255 = hole.
    Raises:
        MisatoError: missing/corrupt/16-bit file, colour channels that differ, or a 0/1-valued mask
        (which the 0/255 convention would read as "no hole at all").
    """
    path = Path(path)
    return decode_mask_uint8(_read_bytes(path, "Mask"), str(path))


def decode_mask_uint8(data: bytes, source: str = "mask") -> np.ndarray:
    """:func:`read_mask_uint8` of a mask file's bytes already read (``source`` names it in errors)."""
    values = _decode_fast_opaque(data, source)
    if values is None:
        image = _drop_opaque_alpha(_open_8bit(data, source), source)
        values = np.asarray(image.convert("L") if image.mode == "1" else image, dtype=np.uint8)
    if values.ndim == 3:
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2])):
            raise MisatoError(f"{source}: colour mask whose channels differ; save it as single-channel 0/255 PNG")
        values = values[..., 0]
    if values.size and values.max() == 1:
        raise MisatoError(
            f"{source}: mask values are 0/1; MISATO masks use 255 = hole, 0 = keep. Save it multiplied by 255."
        )
    return values.copy()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as boolean ``[H, W]``, True = hole (values >= 128)."""
    return binarize_mask(read_mask_uint8(path))


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Boolean/any mask → ``uint8 [H, W]`` with 255 = hole, 0 = keep (the on-disk form)."""
    return binarize_mask(mask).astype(np.uint8) * 255


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` (any contiguous bytes-like object) to ``path`` so that readers see either the old file or
    the complete new one.

    The bytes go to a hidden ``.NAME.<8 hex digits>.tmp`` beside ``path`` (:data:`misato.outputs.TEMPORARY_FILES`;
    14 bytes longer than ``NAME``, as ``tempfile.mkstemp`` made them), then are renamed. Its name is chosen before
    the file is created, so that whatever interrupts the write, also a Ctrl-C's ``KeyboardInterrupt`` landing just
    after the file was created (``tempfile.mkstemp`` could return neither the name nor the handle then), removes
    it. A name another writer holds is never removed: a new one is drawn.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:  # mode 0666 less the umask: the usual permissions of a new file
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:  # another writer's: draw again
            continue
        except OSError as error:  # name the file asked for, not the temporary one that could not be made
            raise OSError(error.errno, error.strerror, str(path)) from None
        except BaseException:  # interrupted while the file was being made: it may exist
            temporary.unlink(missing_ok=True)
            raise
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # write() on a full disk names no file
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 [H, W]`` or ``[H, W, 3]`` array (deterministic for equal input)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected uint8 [H, W] or [H, W, 3], got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Atomically write an RGB ``uint8 [H, W, 3]`` image as PNG."""
    atomic_write_bytes(path, encode_png(image))


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Atomically write a mask (True/1 = hole) as 8-bit single-channel PNG, 255 = hole."""
    atomic_write_bytes(path, encode_png(mask_to_uint8(mask)))


def list_images(folder: str | os.PathLike, what: str = "image") -> dict[str, Path]:
    """Map file stem → path for every ``.png``/``.jpg``/``.jpeg`` directly inside ``folder``.

    Raises:
        MisatoError: the folder is missing or holds no images, two files share a stem (``0001.png`` and
        ``0001.jpg``), which would make pairing ambiguous, an image name is not a file (a broken link, a folder), or
        a name is not valid UTF-8 (it could not be written into run.json, manifests or CSV tables).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MisatoError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    clashes: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            raise MisatoError(f"{folder}: the file name {os.fsencode(path.name)!r} is not valid UTF-8; rename it "
                              "(names go into run.json and the CSV tables)") from None
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() else "not a regular file"
            raise MisatoError(f"{path}: {kind}, not an image file")
        if path.stem in found:
            clashes.append(f"{found[path.stem].name} / {path.name}")
        found[path.stem] = path
    if clashes:
        raise MisatoError(f"{folder}: several files share a name stem: {', '.join(clashes[:10])}")
    if not found:
        raise MisatoError(f"{what} folder {folder} holds no .png/.jpg files")
    return found


def preview_names(names: Iterable[str], limit: int = 10) -> str:
    """Sorted names joined by commas, cut after ``limit`` with a count of the rest (for error messages)."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")


def pair_by_stem(first: Mapping[str, Path], second: Mapping[str, Path], first_what: str, second_what: str) -> list[str]:
    """Sorted stems present in both mappings; any stem in only one of them is an error that lists them.

    ``first_what`` / ``second_what`` name one item of each (singular: "ground-truth image", "mask"); the message
    counts them ("2 masks without a ground-truth image: …").
    """
    missing = set(first) - set(second)
    extra = set(second) - set(first)

    def counted(names: set, what: str) -> str:
        return f"{len(names)} {what}{'' if len(names) == 1 else 's'}"

    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{counted(missing, first_what)} without a {second_what}: {preview_names(missing)}")
        if extra:
            parts.append(f"{counted(extra, second_what)} without a {first_what}: {preview_names(extra)}")
        raise MisatoError("; ".join(parts))
    return sorted(first)
