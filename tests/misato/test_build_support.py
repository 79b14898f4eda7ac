"""Shared pieces for the builder tests (this module holds no tests itself).

- :func:`tiny_clip` – a 2-layer ViT open_clip model with random weights, created offline from a ``local-dir``
  config (``image_size`` 32), so feature extraction takes milliseconds;
- ``write_*`` – synthetic raw datasets in each real on-disk layout, with images of a few colour families so the
  clustering has structure;
- :class:`BoxMasks` – a small deterministic stand-in for ``misato.masks`` generators (``sample(rng)``).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import smooth_image

TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {},
}
OBJECT_COLOUR = (255, 0, 0)


def tiny_clip_model(folder: Path) -> str:
    """Write the tiny config into ``folder`` and return the open_clip model name (``local-dir:…``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    return f"local-dir:{folder}"


def tiny_clip(folder: Path):
    from misato.build.features import load_clip

    return load_clip(tiny_clip_model(folder), "none", "cpu")


def photo(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    """A synthetic photo ``uint8 [height, width, 3]``: one of four colour families plus smooth variation."""
    rng = np.random.default_rng(seed)
    base = smooth_image(rng, max(height, width))[:height, :width].astype(np.int32)
    tint = np.array([(90, 0, 0), (0, 90, 0), (0, 0, 90), (60, 60, 0)][seed % 4])
    return np.clip(base // 2 + tint, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_jpeg(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(image))
    return path


def write_flickr(root: Path, n: int = 8, seed: int = 0) -> Path:
    for i in range(n):
        write_jpeg(root / f"{i:05d}.jpg", photo(seed + i))
    return root


def write_matterport(root: Path, houses_zipped: int = 2, houses_unzipped: int = 1, per_house: int = 4, seed: int = 100) -> Path:
    """``root/v1/scans/<house>/undistorted_color_images.zip`` plus unzipped houses; each panorama also gets the
    unwanted ``_d`` (depth) and ``_j`` (HDR) files."""
    scans = root / "v1" / "scans"
    for h in range(houses_zipped + houses_unzipped):
        house = f"house{h}"
        files = {}
        for k in range(per_house):
            stem = f"{h:02d}{k:02d}abcdef0123456789abcdef01234567"[:32]
            files[f"{house}/undistorted_color_images/{stem}_i{k % 3}_{k % 6}.jpg"] = jpeg_bytes(photo(seed + 10 * h + k))
            files[f"{house}/undistorted_color_images/{stem}_j{k % 3}_{k % 6}.jxr"] = b"hdr"
            files[f"{house}/undistorted_depth_images/{stem}_d{k % 3}_{k % 6}.png"] = b"depth"
        if h < houses_zipped:
            (scans / house).mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(scans / house / "undistorted_color_images.zip", "w") as archive:
                for member, data in sorted(files.items()):
                    if "undistorted_color_images/" in member:
                        archive.writestr(member, data)
        else:
            for member, data in files.items():
                path = scans / house / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return root


def write_megadepth(root: Path, scenes: int = 2, per_scene: int = 4, seed: int = 200) -> Path:
    base = root / "MegaDepth_v1"
    for s in range(scenes):
        for k in range(per_scene):
            write_jpeg(base / f"{s:04d}" / f"dense{k % 2}" / "imgs" / f"img_{k:03d}.jpg", photo(seed + 10 * s + k))
            depth = base / f"{s:04d}" / f"dense{k % 2}" / "depths" / f"img_{k:03d}.h5"
            depth.parent.mkdir(parents=True, exist_ok=True)
            depth.write_bytes(b"not an image")
    return root


def write_coco(root: Path, n: int = 6, seed: int = 300, height: int = 40, width: int = 56) -> tuple[Path, Path]:
    """``root/train2014/COCO_train2014_<id>.jpg`` with pure-red objects, and ``root/annotations/instances.json``
    whose polygons (one per image, plus a crowd RLE on even ids) describe exactly those objects."""
    from pycocotools import mask as mask_utils

    folder = root / "train2014"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        image_id = 1000 + i
        image = photo(seed + i, height, width)
        x0, y0 = 4 + i, 6
        polygon = [x0, y0, x0 + 20, y0, x0 + 20, y0 + 18, x0, y0 + 18]
        image[y0 : y0 + 18, x0 : x0 + 20] = OBJECT_COLOUR
        annotations.append(
            {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
             "segmentation": [[float(v) for v in polygon]], "area": 360.0, "bbox": [x0, y0, 20, 18]}
        )
        if i % 2 == 0:
            crowd = np.zeros((height, width), np.uint8, order="F")
            crowd[28:36, 40:52] = 1
            image[28:36, 40:52] = OBJECT_COLOUR
            rle = mask_utils.encode(np.asfortranarray(crowd))
            rle["counts"] = rle["counts"].decode()
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                 "segmentation": rle, "area": 96.0, "bbox": [40, 28, 12, 8]}
            )
        name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(image).save(folder / name, quality=98)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotation_file = root / "annotations" / "instances_train2014.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return folder, annotation_file


class BoxMasks:
    """Deterministic test mask generator: 1–3 random rectangles, hole ratio kept within ``ratio_range``."""

    def __init__(self, size: int, ratio_range: tuple[float, float] = (0.1, 0.6)):
        self.size = size
        self.ratio_range = ratio_range

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
        while True:
            mask = np.zeros((self.size, self.size), bool)
            for _ in range(int(rng.integers(1, 4))):
                h, w = rng.integers(self.size // 4, self.size // 2 + 1, size=2)
                y, x = rng.integers(0, self.size - h + 1), rng.integers(0, self.size - w + 1)
                mask[y : y + h, x : x + w] = True
            if self.ratio_range[0] <= mask.mean() <= self.ratio_range[1]:
                return mask, ("box",)

    def parameters(self) -> dict:
        return {"name": "test-boxes", "size": self.size, "ratio_range": list(self.ratio_range)}
