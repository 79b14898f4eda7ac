"""Readers for the raw datasets MISATO is built from, each in its real on-disk layout.

Every reader takes the dataset root *or any folder inside it* and returns :class:`SourceImage` records in a
deterministic order (sorted relative paths). Readers only list files; decoding happens later (in DataLoader
workers) through :meth:`SourceImage.decode`, so a corrupt file is detected, counted and skipped there.

Layouts (REFERENCE 2):

- Flickr-Landscape: a flat folder of photos (searched recursively, so a parent folder works too).
- Matterport3D v1: ``v1/scans/<house>/undistorted_color_images.zip`` holding
  ``<house>/undistorted_color_images/<uuid>_i<camera>_<yaw>.jpg``, zipped or unzipped. Only the tone-mapped
  colour images (``_i``) are kept; HDR (``_j``) and depth (``_d``) files are ignored. When a house is present
  both unzipped and zipped, the unzipped folder is used.
- MegaDepth v1: ``MegaDepth_v1/<scene>/dense<k>/imgs/*.jpg``.
- COCO 2014: ``train2014/COCO_train2014_<12 digits>.jpg`` (and ``val2014``) plus an instances JSON; only
  images listed in the JSON are kept (their foreground is needed for the background masks).
- Generic: every ``.png``/``.jpg``/``.jpeg`` under a folder, recursively (``--domain NAME=DIR``).

Hidden files and folders (names starting with ``.``) are ignored everywhere.
"""
from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from misato.errors import MisatoError
from misato.io import IMAGE_SUFFIXES, decode_image

ZIP_MEMBER_SEPARATOR = "::"
"""Joins a zip file's relative path and a member name in :attr:`SourceImage.relative_path`."""

MATTERPORT_ZIP_NAME = "undistorted_color_images.zip"
MATTERPORT_FOLDER_NAME = "undistorted_color_images"
MATTERPORT_COLOUR = re.compile(r"^[0-9A-Za-z]+_i\d+_\d+\.jpe?g$", re.IGNORECASE)
COCO_FILE = re.compile(r"^COCO_(train|val)2014_\d{12}\.jpg$")


@dataclass(frozen=True)
class SourceImage:
    """One raw image.

    Attributes:
        source_dataset: the dataset it comes from (``"Matterport3D"``, …).
        root: the folder the user passed; ``relative_path`` is relative to it.
        relative_path: POSIX path under ``root``; for a zip member ``<zip path>::<member>``.
        coco_image_id: the COCO image id (COCO only), used to look up its annotations.
        expected_size: ``(height, width)`` the annotations promise (COCO only), checked after decoding.
    """

    source_dataset: str
    root: Path
    relative_path: str
    coco_image_id: int | None = None
    expected_size: tuple[int, int] | None = None

    @property
    def file(self) -> Path:
        """The file on disk holding the image: the zip archive for a zip member."""
        return self.root / self.relative_path.split(ZIP_MEMBER_SEPARATOR, 1)[0]

    def fingerprint(self) -> list[int]:
        """``[size in bytes, modification time in ns, status-change time in ns]`` of :attr:`file`.

        Cheap to read (one ``stat``), and different after the file is rewritten: the change time moves on every
        write and, unlike the modification time, cannot be set back. A resumed build re-hashes a source only when
        this differs from the one it recorded.
        """
        status = self.file.stat()
        return [status.st_size, status.st_mtime_ns, status.st_ctime_ns]

    def read_bytes(self) -> bytes:
        """The file's bytes (from the zip archive for a zip member)."""
        if ZIP_MEMBER_SEPARATOR in self.relative_path:
            member = self.relative_path.split(ZIP_MEMBER_SEPARATOR, 1)[1]
            with zipfile.ZipFile(self.file) as handle:
                return handle.read(member)
        return self.file.read_bytes()

    def decode(self, data: bytes | None = None) -> np.ndarray:
        """The decoded image, ``uint8 [H, W, 3]`` RGB (see :func:`misato.io.decode_image`).

        Args:
            data: the file's bytes when already read (:meth:`read_bytes`); read here otherwise.
        Raises:
            MisatoError: the file cannot be used (corrupt, 16-bit, transparent); the build skips and lists it.
        """
        return decode_image(self.read_bytes() if data is None else data, self.relative_path)


def _require_folder(folder: str | os.PathLike, what: str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MisatoError(f"{what} folder not found: {folder}")
    return folder


def _walk_files(folder: Path) -> Iterator[Path]:
    """Every non-hidden file under ``folder`` (hidden folders are not entered)."""
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield Path(directory) / name


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _nonempty(records: list[SourceImage], what: str, folder: Path, expected: str) -> list[SourceImage]:
    if not records:
        raise MisatoError(f"{what}: no images found under {folder}; expected {expected}")
    return sorted(records, key=lambda record: record.relative_path)


def read_image_folder(folder: str | os.PathLike, source_dataset: str = "custom") -> list[SourceImage]:
    """Every image under ``folder``, recursively (generic reader, also used for Flickr-Landscape)."""
    root = _require_folder(folder, source_dataset)
    records = [
        SourceImage(source_dataset, root, _relative(path, root)) for path in _walk_files(root) if _is_image_name(path.name)
    ]
    return _nonempty(records, source_dataset, root, "image files (.png/.jpg/.jpeg), searched recursively")


def read_flickr_landscape(folder: str | os.PathLike) -> list[SourceImage]:
    """Flickr-Landscape (InfinityGAN): a flat folder of landscape photos (searched recursively)."""
    return read_image_folder(folder, "Flickr-Landscape")


def read_matterport(folder: str | os.PathLike) -> list[SourceImage]:
    """Matterport3D v1 tone-mapped colour images (``<uuid>_i<camera>_<yaw>.jpg``), zipped or unzipped."""
    root = _require_folder(folder, "Matterport3D")
    records: list[SourceImage] = []
    unzipped_houses: set[str] = set()
    archives: list[Path] = []
    for path in _walk_files(root):
        if path.name == MATTERPORT_ZIP_NAME:
            archives.append(path)
        elif path.parent.name == MATTERPORT_FOLDER_NAME and MATTERPORT_COLOUR.match(path.name):
            records.append(SourceImage("Matterport3D", root, _relative(path, root)))
            unzipped_houses.add(path.parent.parent.name)
    for archive in sorted(archives):
        if archive.parent.name in unzipped_houses:
            continue  # the same house is present unzipped; do not count its images twice
        try:
            with zipfile.ZipFile(archive) as handle:
                members = handle.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise MisatoError(f"{archive}: not a readable zip archive ({error}); re-download it or unzip it") from None
        for member in members:
            parts = PurePosixPath(member).parts
            if len(parts) >= 2 and parts[-2] == MATTERPORT_FOLDER_NAME and MATTERPORT_COLOUR.match(parts[-1]):
                relative = f"{_relative(archive, root)}{ZIP_MEMBER_SEPARATOR}{member}"
                records.append(SourceImage("Matterport3D", root, relative))
    return _nonempty(
        records,
        "Matterport3D",
        root,
        f"v1/scans/<house>/{MATTERPORT_ZIP_NAME} or <house>/{MATTERPORT_FOLDER_NAME}/<uuid>_i<camera>_<yaw>.jpg",
    )


def read_megadepth(folder: str | os.PathLike) -> list[SourceImage]:
    """MegaDepth v1 images: ``<scene>/dense<k>/imgs/*.jpg`` (depth maps beside them are ignored)."""
    root = _require_folder(folder, "MegaDepth")
    records = []
    for path in _walk_files(root):
        if _is_image_name(path.name) and path.parent.name == "imgs" and path.parent.parent.name.startswith("dense"):
            records.append(SourceImage("MegaDepth", root, _relative(path, root)))
    return _nonempty(records, "MegaDepth", root, "MegaDepth_v1/<scene>/dense<k>/imgs/*.jpg")


def read_coco(images: str | os.PathLike, coco) -> tuple[list[SourceImage], list[str]]:
    """COCO 2014 images that the loaded annotations (a ``pycocotools.coco.COCO``) describe.

    Returns:
        ``(records, unannotated)``: the usable images, and the relative paths of image files on disk that the
        annotation file does not list (reported by the build, not used).
    Raises:
        MisatoError: no COCO images under the folder, or none of them is in the annotation file.
    """
    root = _require_folder(images, "COCO 2014 image")
    by_name = {info["file_name"]: info for info in coco.imgs.values()}
    records, unannotated = [], []
    for path in _walk_files(root):
        if not COCO_FILE.match(path.name):
            continue
        info = by_name.get(path.name)
        if info is None:
            unannotated.append(_relative(path, root))
            continue
        size = (int(info["height"]), int(info["width"]))
        records.append(SourceImage("COCO 2014", root, _relative(path, root), int(info["id"]), size))
    if not records:
        if unannotated:
            raise MisatoError(
                f"COCO: none of the {len(unannotated)} images under {root} is listed in the annotation file "
                f"(e.g. {sorted(unannotated)[0]}); pass the instances JSON of the same split "
                "(train2014 images → instances_train2014.json)"
            )
        raise MisatoError(f"COCO: no images found under {root}; expected train2014/COCO_train2014_<12 digits>.jpg")
    return sorted(records, key=lambda record: record.relative_path), sorted(unannotated)
