"""The MISATO folder layout: ``ROOT/image/NNNN.png``, ``ROOT/mask/NNNN.png``, optional ``ROOT/manifest.csv``.

Domains follow the released index ranges (REFERENCE 1): 0000–0499 landscape, 0500–0999 indoor,
1000–1499 building, 1500–1999 background. A ``manifest.csv`` with ``name`` and ``domain`` columns (written
by ``misato build``) overrides the ranges. The 1024 release prefixes mask names with ``00``; that is accepted.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from misato.errors import MisatoError
from misato.io import list_images, pair_by_stem


@dataclass(frozen=True)
class Domain:
    """One MISATO domain: its name, first and last index (inclusive), and the raw dataset it comes from."""

    name: str
    first: int
    last: int
    source: str


DOMAINS: tuple[Domain, ...] = (
    Domain("landscape", 0, 499, "Flickr-Landscape"),
    Domain("indoor", 500, 999, "Matterport3D"),
    Domain("building", 1000, 1499, "MegaDepth"),
    Domain("background", 1500, 1999, "COCO 2014"),
)
UNKNOWN_DOMAIN = "unknown"
MANIFEST_NAME = "manifest.csv"


def domain_of_name(name: str) -> str:
    """Domain of a file stem by the MISATO index ranges (``"0612"`` → ``"indoor"``); ``"unknown"`` otherwise."""
    if not name.isdigit():
        return UNKNOWN_DOMAIN
    index = int(name)
    for domain in DOMAINS:
        if domain.first <= index <= domain.last:
            return domain.name
    return UNKNOWN_DOMAIN


def read_manifest_domains(path: str | os.PathLike) -> dict[str, str]:
    """``name → domain`` from a manifest CSV with ``name`` and ``domain`` columns."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"name", "domain"} <= set(reader.fieldnames):
            raise MisatoError(f"{path}: a manifest needs 'name' and 'domain' columns, found {reader.fieldnames}")
        return {row["name"]: row["domain"] for row in reader}


@dataclass
class PairedFolder:
    """Ground-truth images paired with their masks, by file stem, in sorted order."""

    names: list[str]
    images: dict[str, Path]
    masks: dict[str, Path]
    domains: dict[str, str] = field(default_factory=dict)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.names)


def masks_by_image_stem(mask_files: dict[str, Path], image_stems: set[str]) -> dict[str, Path]:
    """Accept the 1024 release's ``00``-prefixed mask names when they are the only match."""
    renamed: dict[str, Path] = {}
    for stem, path in mask_files.items():
        if stem not in image_stems and stem.startswith("00") and stem[2:] in image_stems:
            stem = stem[2:]
        renamed[stem] = path
    return renamed


def open_pairs(gt: str | os.PathLike, mask: str | os.PathLike | None = None) -> PairedFolder:
    """Open ground truth and masks.

    Args:
        gt: a MISATO root (holding ``image/`` and ``mask/``) or a plain folder of images.
        mask: the mask folder; defaults to ``GT/mask`` when ``gt`` is a MISATO root.
    Raises:
        MisatoError: missing folders, no images, or images and masks that do not pair one to one.
    """
    gt = Path(gt)
    if not gt.exists():
        raise MisatoError(f"{gt}: no such folder (the MISATO / ground-truth folder)")
    is_root = (gt / "image").is_dir()
    image_dir = gt / "image" if is_root else gt
    if mask is None:
        if not is_root:
            raise MisatoError(f"{gt} is not a MISATO root (no image/ folder inside): give the folder that holds image/ "
                              "and mask/ (misato evaluate and misato inpaint also take a separate mask folder, --mask)")
        mask = gt / "mask"
    images = list_images(image_dir, "ground-truth image")
    masks = masks_by_image_stem(list_images(mask, "mask"), set(images))
    names = pair_by_stem(images, masks, "ground-truth image", "mask")
    manifest = gt / MANIFEST_NAME if is_root else None
    if manifest is not None and manifest.is_file():
        listed = read_manifest_domains(manifest)
        domains = {name: listed.get(name, domain_of_name(name)) for name in names}
    else:
        domains = {name: domain_of_name(name) for name in names}
    return PairedFolder(names, images, {n: masks[n] for n in names}, domains, gt if is_root else None)
