"""Object-shape masks: silhouettes of real objects, randomly scaled, flipped and placed on the canvas.

Sources (``objects=`` / ``--objects``):
- a COCO ``instances_*.json``: every non-crowd instance whose area is a fraction ``[min_area, max_area]``
  (LaMa's segmentation defaults 0.02 and 0.3) of its image; polygon and RLE segmentations are decoded with
  pycocotools when drawn;
- a folder of object-mask PNG/JPG files (e.g. the released ASUKA ``object_masks/``), each a full-frame mask
  with 255 = object; empty files are skipped when drawn.

Placement: the silhouette is cropped to its bounding box and scaled by ``sqrt(size² / frame_area) ×
U(0.75, 1.25)`` — so it keeps the share of the frame it had in its source image, give or take the random
factor — flipped left-right with probability 0.5, and placed at a uniform position (fully inside when it
fits; otherwise a uniform crop of it covers the canvas).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from misato.errors import OPTION, MisatoError
from misato.io import list_images, read_mask
from misato.masks.base import MAX_ATTEMPTS, Kinds, MaskSampler
from misato.hashing import file_sha256

COCO_MIN_AREA = 0.02
COCO_MAX_AREA = 0.3
SCALE_RANGE = (0.75, 1.25)


class ObjectSource(ABC):
    """A collection of object silhouettes; :meth:`draw` returns one as ``(bool [h, w] cropped, frame_area)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @abstractmethod
    def __len__(self) -> int:
        """Number of silhouettes."""

    @abstractmethod
    def silhouette(self, index: int) -> tuple[np.ndarray, int]:
        """The full-frame silhouette ``index`` (bool, True = object) and its frame area in pixels."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes when the source's content changes (recorded beside generated masks)."""

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A uniformly chosen non-empty silhouette, cropped to its bounding box, and its frame area."""
        for _ in range(MAX_ATTEMPTS):
            full, frame_area = self.silhouette(int(rng.integers(len(self))))
            rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
            if rows.size:
                return full[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], frame_area
        raise MisatoError(f"object source {self.path}: {MAX_ATTEMPTS} drawn object masks were all empty")


class CocoObjects(ObjectSource):
    """Instances from a COCO annotation JSON (decoded lazily, one per draw)."""

    def __init__(self, path: str | os.PathLike, min_area: float = COCO_MIN_AREA, max_area: float = COCO_MAX_AREA):
        super().__init__(path)
        self.min_area, self.max_area = min_area, max_area
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            sizes = {image["id"]: (int(image["height"]), int(image["width"])) for image in data["images"]}
            annotations = data["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise MisatoError(
                f"{self.path}: not a readable COCO instances JSON with 'images' (id, height, width) and "
                f"'annotations' ({type(error).__name__}: {error})"
            ) from None
        self.instances: list[tuple[Any, int, int]] = []
        for annotation in annotations:
            size = sizes.get(annotation.get("image_id"))
            if annotation.get("iscrowd", 0) or size is None or "segmentation" not in annotation:
                continue
            share = float(annotation.get("area", 0)) / (size[0] * size[1])
            if min_area <= share <= max_area:
                self.instances.append((annotation["segmentation"], size[0], size[1]))
        if not self.instances:
            raise MisatoError(
                f"{self.path}: no non-crowd instance covers between {min_area:.0%} and {max_area:.0%} of its "
                "image; pass a COCO instances_*.json with segmentations"
            )

    def __len__(self) -> int:
        return len(self.instances)

    def silhouette(self, index: int) -> tuple[np.ndarray, int]:
        from pycocotools import mask as mask_utils

        segmentation, height, width = self.instances[index]
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE
            counts = segmentation["counts"]
            rle = {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy= deprecation; harmless
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool), height * width

    def fingerprint(self) -> str:
        return f"coco-json sha256:{file_sha256(self.path)} min_area={self.min_area} max_area={self.max_area}"


class FolderObjects(ObjectSource):
    """Object-mask image files in one folder (255 = object), read lazily, one per draw."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.files = sorted(list_images(self.path, what="object mask").values())

    def __len__(self) -> int:
        return len(self.files)

    def silhouette(self, index: int) -> tuple[np.ndarray, int]:
        mask = read_mask(self.files[index])
        return mask, mask.size

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.name}\0{path.stat().st_size}\n".encode())
        return f"folder files={len(self.files)} names+sizes sha256:{digest.hexdigest()}"


def open_object_source(path: str | os.PathLike | None, preset: str) -> ObjectSource:
    """A COCO JSON file or a folder of object masks; a clear error when missing or of another kind."""
    if path is None:
        raise MisatoError(
            f"preset {preset!r} needs object silhouettes: pass {OPTION} with a COCO "
            "instances_*.json or a folder of object-mask PNGs (e.g. the released ASUKA object_masks/)", option="objects"
        )
    path = Path(path)
    if path.is_dir():
        return FolderObjects(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return CocoObjects(path)
    if not path.exists():
        raise MisatoError(f"object source not found: {path}")
    raise MisatoError(f"object source {path}: expected a COCO instances .json file or a folder of object masks")


def place_silhouette(rng: np.random.Generator, silhouette: np.ndarray, frame_area: int, size: int,
                     scale_range: tuple[float, float] = SCALE_RANGE) -> np.ndarray:
    """Scale, flip and place a cropped silhouette (bool ``[h, w]``) on a ``[size, size]`` bool canvas."""
    factor = math.sqrt(size * size / frame_area) * rng.uniform(*scale_range)
    h, w = silhouette.shape
    new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(silhouette.astype(np.uint8) * 255, (new_w, new_h), interpolation=interpolation) >= 128
    if rng.random() < 0.5:
        scaled = scaled[:, ::-1]
    y = int(rng.integers(min(0, size - new_h), max(0, size - new_h) + 1))
    x = int(rng.integers(min(0, size - new_w), max(0, size - new_w) + 1))
    canvas = np.zeros((size, size), bool)
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + new_h, size), min(x + new_w, size)
    canvas[top:bottom, left:right] = scaled[top - y : bottom - y, left - x : right - x]
    return canvas


class ObjectMask(MaskSampler):
    """One placed object silhouette per mask."""

    def __init__(self, source: ObjectSource, size: int, scale_range: tuple[float, float] = SCALE_RANGE):
        self.source = source
        self.size = size
        self.scale_range = scale_range

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Kinds]:
        silhouette, frame_area = self.source.draw(rng)
        return place_silhouette(rng, silhouette, frame_area, self.size, self.scale_range), ("object",)

    def parameters(self) -> dict[str, Any]:
        return {"type": "object", "source": str(self.source.path), "source_fingerprint": self.source.fingerprint(),
                "objects": len(self.source), "scale_range": list(self.scale_range), "flip": "left-right, p=0.5"}
