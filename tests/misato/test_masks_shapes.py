"""Rectangles, object silhouettes (synthetic COCO JSON and mask folder) and the two mixtures."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from misato.errors import MisatoError
from misato.io import write_mask
from misato.masks import make_generator


def binomial_ok(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9


def test_rect_is_one_rectangle_with_documented_sides():
    gen = make_generator("rect", 200)
    ratios = []
    for i in range(300):
        mask, kinds = gen.sample(np.random.default_rng(i))
        assert kinds == ("rect",)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == rows.size * cols.size
        assert 40 <= rows.size <= 120 and 40 <= cols.size <= 120  # U(0.2, 0.6) * 200
        ratios.append(mask.mean())
    # E[f1 f2] = 0.4^2 for independent side fractions U(0.2, 0.6)
    assert abs(np.mean(ratios) - 0.4 ** 2) < 4 * np.std(ratios) / np.sqrt(len(ratios))


def test_complement_rect_keeps_one_inner_rectangle():
    gen = make_generator("complement-rect", 200)
    ratios = []
    for i in range(300):
        mask, kinds = gen.sample(np.random.default_rng(i))
        assert kinds == ("complement-rect",)
        keep = ~mask
        rows, cols = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
        assert keep.sum() == rows.size * cols.size and 60 <= rows.size <= 140
        ratios.append(mask.mean())
    assert abs(np.mean(ratios) - (1 - 0.5 ** 2)) < 4 * np.std(ratios) / np.sqrt(len(ratios))


def _uncompressed_rle(binary: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE by hand: run lengths over the column-major flattening, starting with zeros."""
    flat = binary.flatten(order="F").astype(int)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = [int(r) for r in np.diff(bounds)]
    return ([0] + runs if flat[0] else runs)


@pytest.fixture()
def coco_json(tmp_path):
    """Image 100 x 200 (h x w); polygon 40x50 box (10 %), RLE triangle, uncompressed-RLE L, crowd, tiny."""
    h, w = 100, 200
    triangle = np.zeros((h, w), np.uint8)
    for y in range(60):
        triangle[20 + y, 100 : 100 + y + 1] = 1
    ell = np.zeros((h, w), bool)
    ell[10:70, 20:40] = True
    ell[50:70, 20:80] = True
    rle = mask_utils.encode(np.asfortranarray(triangle))
    annotations = [
        {"id": 1, "image_id": 7, "iscrowd": 0, "area": 2000.0, "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]},
        {"id": 2, "image_id": 7, "iscrowd": 0, "area": float(triangle.sum()),
         "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}},
        {"id": 3, "image_id": 7, "iscrowd": 0, "area": float(ell.sum()),
         "segmentation": {"size": [h, w], "counts": _uncompressed_rle(ell)}},
        {"id": 4, "image_id": 7, "iscrowd": 1, "area": 2000.0, "segmentation": [[0, 0, 200, 0, 200, 10, 0, 10]]},
        {"id": 5, "image_id": 7, "iscrowd": 0, "area": 20.0, "segmentation": [[0, 0, 5, 0, 5, 4, 0, 4]]},
    ]
    path = tmp_path / "instances_tiny.json"
    path.write_text(json.dumps({"images": [{"id": 7, "height": h, "width": w}], "annotations": annotations}))
    return path, {"box": (40, 50, 2000), "triangle": (60, 60, int(triangle.sum())), "ell": (60, 60, int(ell.sum()))}


def identify(crop: np.ndarray) -> str:
    """Which fixture shape a cropped hole is: the box fills its bounding box, the L's top row is a third full
    (its upright bar), the triangle's top row is its apex."""
    if crop.mean() > 0.97:
        return "box"
    return "ell" if crop[0].mean() > 0.2 else "triangle"


def test_object_masks_from_coco_polygon_and_rle(coco_json):
    path, shapes = coco_json
    gen = make_generator("object", 128, objects=path)
    assert len(gen.sampler.inner.source) == 3  # crowd and tiny instances are left out
    factor = np.sqrt(128 * 128 / (100 * 200))
    seen = Counter()
    for i in range(300):
        mask, kinds = gen.sample(np.random.default_rng(i))
        assert kinds == ("object",)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        height, width, name = rows.size, cols.size, identify(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        seen[name] += 1
        h0, w0, area0 = shapes[name]
        scale = height / (h0 * factor)
        assert 0.75 - 0.06 <= scale <= 1.25 + 0.06
        assert abs(width / (w0 * factor) - scale) < 0.06  # aspect ratio kept (within rounding)
        assert abs(mask.sum() / (area0 * factor ** 2 * scale ** 2) - 1) < 0.12
    assert all(binomial_ok(seen[name], 300, 1 / 3) for name in shapes)


def test_object_flips_and_positions_vary(coco_json):
    path, _ = coco_json
    gen = make_generator("object", 128, objects=path)
    triangle_flips, centres = Counter(), []
    for i in range(400):
        mask, _ = gen.sample(np.random.default_rng(i))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if identify(crop) == "triangle":  # apex at the top left unless flipped left-right
            triangle_flips[bool(crop[0, -1] and not crop[0, 0])] += 1
        centres.append(((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2))
    total = sum(triangle_flips.values())
    assert total > 80 and binomial_ok(triangle_flips[True], total, 0.5)
    centres = np.array(centres)
    assert centres.min() < 30 and centres.max() > 98  # placements spread over the canvas


def test_object_folder_source_skips_empty_files(tmp_path):
    folder = tmp_path / "object_masks"
    disc = np.hypot(*np.mgrid[-32:32, -32:32]) < 20
    write_mask(folder / "a.png", disc)
    write_mask(folder / "b.png", np.zeros((64, 64), bool))
    gen = make_generator("object", 64, objects=folder)
    areas = [gen.sample(np.random.default_rng(i))[0].sum() for i in range(100)]
    expected = disc.sum()
    assert min(areas) >= 0.75 ** 2 * expected * 0.85 and max(areas) <= 1.25 ** 2 * expected * 1.15
    assert abs(np.mean(areas) / (expected * (1.25 ** 3 - 0.75 ** 3) / 1.5) - 1) < 0.05  # E[U(.75, 1.25)^2]


def test_object_source_errors(tmp_path):
    with pytest.raises(MisatoError, match="needs object silhouettes"):
        make_generator("object", 64)
    with pytest.raises(MisatoError, match="needs object silhouettes"):
        make_generator("misato", 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="holds no"):
        make_generator("object", 64, objects=tmp_path / "empty")
    with pytest.raises(MisatoError, match="not found"):
        make_generator("asuka-train", 64, objects=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(MisatoError, match="COCO instances"):
        make_generator("object", 64, objects=bad)
    only_crowd = tmp_path / "crowd.json"
    only_crowd.write_text(json.dumps({"images": [{"id": 1, "height": 10, "width": 10}], "annotations": [
        {"image_id": 1, "iscrowd": 1, "area": 10, "segmentation": [[0, 0, 5, 0, 5, 2]]}]}))
    with pytest.raises(MisatoError, match="no non-crowd instance"):
        make_generator("object", 64, objects=only_crowd)
    blank = tmp_path / "blank"
    write_mask(blank / "z.png", np.zeros((8, 8), bool))
    with pytest.raises(MisatoError, match="all empty"):
        make_generator("object", 64, objects=blank).sample(np.random.default_rng(0))


@pytest.mark.parametrize(("preset", "expected"), [
    ("asuka-train", {"object": 0.5, "comod": 0.2, "lama": 0.2, "rect": 0.05, "complement-rect": 0.05}),
    ("misato", {"object": 5 / 9, "comod": 2 / 9, "lama": 2 / 9}),
])
def test_mixture_proportions_and_object_unions(tmp_path, preset, expected):
    folder = tmp_path / "objects"
    write_mask(folder / "o.png", np.hypot(*np.mgrid[-32:32, -32:32]) < 16)
    gen = make_generator(preset, 64, objects=folder)
    n = 1500
    first, union_comod, union_lama, objects = Counter(), 0, 0, 0
    for i in range(n):
        _, kinds = gen.sample(np.random.default_rng([3, i]))
        first[kinds[0]] += 1
        if kinds[0] == "object":
            objects += 1
            union_comod += "comod" in kinds
            union_lama += "lama" in kinds
            assert len(kinds) == len(set(kinds)) and set(kinds) <= {"object", "comod", "lama"}
        else:
            assert len(kinds) == 1
    assert set(first) == set(expected)
    for kind, p in expected.items():
        assert binomial_ok(first[kind], n, p), (kind, first[kind] / n, p)
    assert binomial_ok(union_comod, objects, 0.25) and binomial_ok(union_lama, objects, 0.25)


def test_ratio_range_is_honoured_and_unreachable_range_reported(coco_json):
    gen = make_generator("lama-medium-512", 128, ratio_range=(0.1, 0.2))
    assert all(0.1 < gen.sample(np.random.default_rng(i))[0].mean() < 0.2 for i in range(40))
    path, _ = coco_json
    mix = make_generator("asuka-train", 96, ratio_range=(0.3, 0.6), objects=path)
    assert all(0.3 < mix.sample(np.random.default_rng(i))[0].mean() < 0.6 for i in range(40))
    with pytest.raises(MisatoError, match="unreachable"):
        make_generator("rect", 64, ratio_range=(0.9, 1.0)).sample(np.random.default_rng(0))


@pytest.mark.parametrize("bad", [(0.5, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.3, 0.3), ("a", 1)])
def test_bad_ratio_range(bad):
    with pytest.raises(MisatoError, match="ratio-range"):
        make_generator("rect", 64, ratio_range=bad)


def test_unknown_preset_lists_names_and_bad_size():
    with pytest.raises(MisatoError, match="lama-thin-512.*misato"):
        make_generator("lama-super", 64)
    with pytest.raises(MisatoError, match="size"):
        make_generator("rect", 8)


def test_polarity_and_shape_for_every_preset(coco_json):
    path, _ = coco_json
    from misato.masks import PRESETS

    for preset in PRESETS:
        mask, kinds = make_generator(preset, 96, objects=path).sample(np.random.default_rng(1))
        assert mask.dtype == bool and mask.shape == (96, 96) and 0 < mask.mean() < 1 and kinds
