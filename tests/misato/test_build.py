"""The builder end to end on synthetic raw trees, with a tiny random CLIP and a test mask generator."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion

from misato.build import build, verify
from misato.build.features import extract_features, load_clip
from misato.build.readers import read_flickr_landscape
from tests.misato.test_selection import independent_choice
from misato.cli import main
from misato.errors import MisatoError
from misato.io import read_image, read_mask, read_mask_uint8
from tests.misato.test_build_support import (
    BoxMasks,
    tiny_clip,
    tiny_clip_model,
    write_coco,
    write_flickr,
    write_matterport,
    write_megadepth,
)

SIZE = 32
PER_DOMAIN = 3


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """All four raw datasets plus a custom folder, with one corrupt and one too-small Flickr file."""
    root = tmp_path_factory.mktemp("raw")
    write_flickr(root / "flickr", n=7)
    (root / "flickr" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    from tests.misato.test_build_support import photo, write_jpeg

    write_jpeg(root / "flickr" / "zz_tiny.jpg", photo(50, 10, 12))
    write_matterport(root / "matterport", houses_zipped=1, houses_unzipped=1, per_house=3)
    write_megadepth(root / "megadepth", scenes=2, per_scene=3)
    coco_images, coco_json = write_coco(root / "coco", n=6)
    write_flickr(root / "custom", n=4, seed=70)
    return {
        "flickr_landscape": root / "flickr",
        "matterport": root / "matterport",
        "megadepth": root / "megadepth",
        "coco_images": coco_images,
        "coco_annotations": coco_json,
        "domains": [("mine", root / "custom")],
    }


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip"))


def run(out, raw, encoder, cache, **overrides):
    options = dict(raw, size=SIZE, per_domain=PER_DOMAIN, seed=0, encoder=encoder, feature_cache=cache,
                   mask_generator=BoxMasks(SIZE, (0.15, 0.6)), mask_ratio_range=(0.05, 0.6), progress=False)
    options.update(overrides)
    return build(out, **options)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, raw, encoder):
    out = tmp_path_factory.mktemp("built") / "misato"
    report = run(out, raw, encoder, tmp_path_factory.mktemp("cache"))
    return out, report


def read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_manifest_and_report(built):
    out, report = built
    names = [f"{i:04d}" for i in range(5 * PER_DOMAIN)]
    assert sorted(p.stem for p in (out / "image").iterdir()) == names
    assert sorted(p.stem for p in (out / "mask").iterdir()) == names
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "image", "manifest.csv", "mask"]
    rows = read_manifest(out)
    assert [r["domain"] for r in rows] == [d for d in ("landscape", "indoor", "building", "background", "mine") for _ in range(PER_DOMAIN)]
    assert [r["source_dataset"] for r in rows[::PER_DOMAIN]] == ["Flickr-Landscape", "Matterport3D", "MegaDepth", "COCO 2014", "mine"]
    for row in rows:
        image, mask = read_image(out / "image" / f"{row['name']}.png"), read_mask_uint8(out / "mask" / f"{row['name']}.png")
        assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask)) <= {0, 255}
        assert float(row["hole_ratio"]) == pytest.approx((mask == 255).mean(), abs=1e-6)
        assert row["mask_kinds"] == "box" and row["seed"] == "0"
    info = json.loads((out / "build.json").read_text())
    assert info["skipped_count"] == 2
    reasons = {s["path"]: s["reason"] for s in info["skipped"]}
    assert "cannot decode" in reasons["zz_corrupt.jpg"] and "too small" in reasons["zz_tiny.jpg"]
    assert info["counts"]["landscape"] == {"found": 9, "skipped": 2, "written": PER_DOMAIN}
    assert info["index_ranges"]["indoor"] == [PER_DOMAIN, 2 * PER_DOMAIN - 1]
    assert info["clip"]["pretrained"] == "none" and len(info["clip"]["state_dict_sha256"]) == 64
    assert info["provenance"]["packages"]["scikit-learn"] and info["mask_generator"]["name"] == "test-boxes"
    assert report.counts == {d: PER_DOMAIN for d in ("landscape", "indoor", "building", "background", "mine")}
    assert verify(out) == []


def test_images_are_the_cropped_sources(built, raw):
    """Every output image equals its manifest source, centre-cropped and resized by the documented filter."""
    from PIL import Image

    out, _ = built

    for row in read_manifest(out)[:: PER_DOMAIN + 1]:
        source_root = {"landscape": raw["flickr_landscape"], "building": raw["megadepth"], "mine": raw["domains"][0][1],
                       "background": raw["coco_images"]}.get(row["domain"])
        if source_root is None:
            continue  # indoor sources may sit in a zip; covered by test_readers
        source = read_image(source_root / row["source_path"])
        h, w = source.shape[:2]
        side = min(h, w)
        crop = source[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        expected = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
        assert np.array_equal(read_image(out / "image" / f"{row['name']}.png"), expected)


def test_coco_holes_avoid_annotated_objects(built):
    out, _ = built
    rows = [r for r in read_manifest(out) if r["domain"] == "background"]
    object_pixels = 0
    for row in rows:
        image = read_image(out / "image" / f"{row['name']}.png").astype(int)
        mask = read_mask(out / "mask" / f"{row['name']}.png")
        red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
        # object interiors only: at the edges Lanczos blends object and background colours
        red = binary_erosion(red, np.ones((3, 3), bool))
        object_pixels += red.sum()
        assert not (mask & red).any(), row["name"]
        assert mask.mean() >= 0.05
    assert object_pixels > 30  # the objects survived the crop, so the check above means something


def test_selection_matches_sklearn_on_cached_features(tmp_path, raw, encoder, built):
    """The landscape block follows the documented rule on BisectingKMeans labels of the cached features."""
    from sklearn.cluster import BisectingKMeans

    out, _ = built
    items = read_flickr_landscape(raw["flickr_landscape"])
    result = extract_features(items, encoder, tmp_path / "cache", min_side=SIZE // 2, progress=False)
    usable = result.usable
    features = result.features[usable]
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5) and features.dtype == np.float32
    labels = BisectingKMeans(n_clusters=PER_DOMAIN, random_state=0).fit(features).labels_
    expected = independent_choice(features, labels, PER_DOMAIN)
    manifest = [r["source_path"] for r in read_manifest(out) if r["domain"] == "landscape"]
    assert manifest == [items[usable[p]].relative_path for p in expected]


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path, raw, encoder, built):
    out, _ = built
    again = tmp_path / "again"
    run(again, raw, encoder, tmp_path / "cache2")
    assert folder_bytes(again) == folder_bytes(out)
    other = tmp_path / "other"
    run(other, raw, encoder, tmp_path / "cache2", seed=1)
    assert folder_bytes(other)["mask/0000.png"] != folder_bytes(out)["mask/0000.png"]


@pytest.mark.parametrize("stage, at", [("features", 1), ("write", 1), ("write", 4)])
def test_interrupted_build_resumes_byte_identical(tmp_path, raw, encoder, stage, at):
    out = tmp_path / "reference"
    run(out, raw, encoder, tmp_path / "reference-cache", batch_size=2)
    target = tmp_path / "interrupted"
    calls = []

    def stop(step, count):
        calls.append(step)
        if step == stage and calls.count(stage) == at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(target, raw, encoder, tmp_path / "cache", on_step=stop, batch_size=2)
    assert (target / ".misato-build").is_dir() and not (target / "build.json").exists()
    for leftover in (target / "image" / ".0003.png.k1ll.tmp", target / ".misato-build" / ".plan.json.k1ll.tmp"):
        leftover.parent.mkdir(parents=True, exist_ok=True)  # what a kill -9 inside an atomic write leaves
        leftover.write_bytes(b"half a file")
    with pytest.raises(MisatoError, match="not empty: it holds an unfinished build; pass --resume"):
        run(target, raw, encoder, tmp_path / "cache")
    with pytest.raises(MisatoError, match="different settings .*seed"):
        run(target, raw, encoder, tmp_path / "cache", resume=True, seed=5)
    with pytest.raises(MisatoError, match="different settings .*mask_objects"):  # masks from another source
        run(target, raw, encoder, tmp_path / "cache", resume=True, batch_size=2, mask_objects=raw["coco_annotations"])
    steps = []
    run(target, raw, encoder, tmp_path / "cache", resume=True, batch_size=2, on_step=lambda s, c: steps.append(s))
    assert folder_bytes(target) == folder_bytes(out)
    if stage == "write":
        assert "features" not in steps and steps.count("write") == 5 * PER_DOMAIN - at  # the hook runs after an image is complete
    assert run(target, raw, encoder, tmp_path / "cache", resume=True).already_complete


def test_feature_cache_is_reused(tmp_path, raw, encoder):
    items = read_flickr_landscape(raw["flickr_landscape"])
    first = extract_features(items, encoder, tmp_path / "cache", batch_size=3, min_side=16, progress=False)
    assert first.computed == len(items) and len(first.problems) == 2
    again = extract_features(items, encoder, tmp_path / "cache", batch_size=3, min_side=16, progress=False)
    assert again.computed == 0
    assert np.array_equal(np.nan_to_num(first.features), np.nan_to_num(again.features)) and again.problems == first.problems
    shards = list((tmp_path / "cache").rglob("*.npy"))
    assert shards and all(encoder.weights_digest[:16] in s.parent.name and "-b3-" in s.parent.name for s in shards)


def test_a_file_rewritten_between_its_hash_and_its_decode_stops_and_caches_nothing(tmp_path, raw, encoder, monkeypatch):
    import misato.build.features as features

    source = tmp_path / "raw"
    shutil.copytree(raw["flickr_landscape"], source)
    items = read_flickr_landscape(source)
    real_hash = features._hash_file

    def hash_then_rewrite(item):  # the file changes right after it was hashed, before its decode
        digest = real_hash(item)
        if item is items[1]:
            (item.root / item.relative_path).write_bytes((item.root / items[0].relative_path).read_bytes())
        return digest

    monkeypatch.setattr(features, "_hash_file", hash_then_rewrite)
    with pytest.raises(MisatoError, match=f"{items[1].relative_path}: changed while the build read it"):
        extract_features(items, encoder, tmp_path / "cache", batch_size=2, min_side=16, progress=False)
    monkeypatch.setattr(features, "_hash_file", real_hash)
    again = extract_features(items, encoder, tmp_path / "cache", batch_size=2, min_side=16, progress=False)
    fresh = extract_features(items, encoder, None, batch_size=2, min_side=16, progress=False)
    assert np.array_equal(np.nan_to_num(again.features), np.nan_to_num(fresh.features))


def test_workers_give_the_same_features(tmp_path, raw, encoder):
    items = read_flickr_landscape(raw["flickr_landscape"])
    plain = extract_features(items, encoder, None, batch_size=4, min_side=16, progress=False)
    workers = extract_features(items, encoder, None, batch_size=4, num_workers=2, min_side=16, progress=False)
    assert np.array_equal(np.nan_to_num(plain.features), np.nan_to_num(workers.features))


def test_bad_inputs(tmp_path, raw, encoder):
    with pytest.raises(MisatoError, match="Matterport3D folder not found"):
        run(tmp_path / "a", {"matterport": tmp_path / "missing"}, encoder, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="MegaDepth: no images"):
        run(tmp_path / "b", {"megadepth": tmp_path / "empty"}, encoder, None)
    with pytest.raises(MisatoError, match="go together"):
        run(tmp_path / "c", {"coco_images": raw["coco_images"]}, encoder, None)
    with pytest.raises(MisatoError, match="no raw dataset given"):
        run(tmp_path / "d", {}, encoder, None)
    with pytest.raises(MisatoError, match="domain 'landscape': 7 usable images, but 8"):
        run(tmp_path / "e", {"flickr_landscape": raw["flickr_landscape"]}, encoder, tmp_path / "cache", per_domain=8)
    assert not (tmp_path / "e").exists()  # refused on its settings: no state left to block the next try
    (tmp_path / "e").mkdir()
    with pytest.raises(MisatoError, match="7 usable images, but 8"):
        run(tmp_path / "e", {"flickr_landscape": raw["flickr_landscape"]}, encoder, tmp_path / "cache", per_domain=8)
    assert (tmp_path / "e").is_dir() and not any((tmp_path / "e").iterdir())  # the user's folder stays
    run(tmp_path / "e", {"flickr_landscape": raw["flickr_landscape"]}, encoder, tmp_path / "cache", per_domain=2)
    with pytest.raises(MisatoError, match="name is taken"):
        run(tmp_path / "f", {"domains": [("indoor", raw["flickr_landscape"])]}, encoder, None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(MisatoError, match="not empty"):
        run(tmp_path / "full", {"flickr_landscape": raw["flickr_landscape"]}, encoder, None)
    with pytest.raises(MisatoError, match=r"not empty and holds no build.json; choose another folder \(--overwrite only replaces a folder a build wrote\)$"):
        run(tmp_path / "full", {"flickr_landscape": raw["flickr_landscape"]}, encoder, None, resume=True)
    with pytest.raises(MisatoError, match="mask-ratio-range"):
        run(tmp_path / "g", {"flickr_landscape": raw["flickr_landscape"]}, encoder, None, mask_ratio_range=(0.5, 0.2))
    for inside in (raw["flickr_landscape"], Path(raw["flickr_landscape"]) / "misato"):
        with pytest.raises(MisatoError, match="is the input .* itself|lies inside the input folder"):
            run(inside, {"flickr_landscape": raw["flickr_landscape"]}, encoder, None)


def test_coco_images_whose_size_differs_from_the_annotations_are_skipped(tmp_path, encoder):
    images, annotations = write_coco(tmp_path / "coco", n=4)
    data = json.loads(annotations.read_text())
    data["images"][1]["height"] = 99
    annotations.write_text(json.dumps(data))
    report = build(tmp_path / "out", coco_images=images, coco_annotations=annotations, size=SIZE, per_domain=2,
                   encoder=encoder, mask_generator=BoxMasks(SIZE), progress=False)
    assert [s["reason"] for s in report.skipped] == ["size 56x40 differs from the annotations' 56x99"]


def test_coco_mask_that_cannot_avoid_objects_falls_back_or_fails(tmp_path, encoder):
    """A generator whose holes always lie on the objects: every candidate fails → a clear error."""

    class OnObjects:
        def sample(self, rng):
            mask = np.zeros((SIZE, SIZE), bool)
            mask[:2, :2] = True  # a tiny hole: below the ratio floor once any object pixel is removed
            return mask, ("tiny",)

    images, annotations = write_coco(tmp_path / "coco", n=3)
    with pytest.raises(MisatoError, match="no cluster member admits a background mask"):
        build(tmp_path / "out", coco_images=images, coco_annotations=annotations, size=SIZE, per_domain=2,
              encoder=encoder, mask_generator=OnObjects(), mask_ratio_range=(0.2, 0.9), progress=False)


def test_openai_weights_offline_fail_fast_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match=r"ViT-L-14\.pt.*openaipublic"):
        load_clip("ViT-L-14", "openai", "cpu")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ViT-L-14.pt").write_bytes(b"not the OpenAI file")
    with pytest.raises(MisatoError, match="does not match the official ViT-L-14.pt"):
        load_clip("ViT-L-14", "openai", "cpu", weights_dir=tmp_path / "weights")
    with pytest.raises(MisatoError, match="not 'none', 'openai' or an existing checkpoint"):
        load_clip("ViT-L-14", str(tmp_path / "nope.pt"), "cpu")


def test_checkpoint_file_round_trip(tmp_path, encoder):
    """A saved state dict loads through --clip-pretrained FILE and yields the same weights digest."""
    path = tmp_path / "tiny.pt"
    torch.save(encoder.model.state_dict(), path)
    loaded = load_clip(tiny_clip_model(tmp_path / "cfg"), str(path), "cpu", init_seed=123)
    assert loaded.weights_digest == encoder.weights_digest and loaded.weights_file_sha256


def test_cli_verify_and_build_errors(tmp_path, raw, built, capsys):
    out, _ = built
    assert main(["verify", str(out)]) == 0
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(out, broken)
    (broken / "mask" / "0003.png").unlink()
    mask = read_mask_uint8(broken / "mask" / "0001.png")
    mask[0, 0] = 17
    from PIL import Image

    Image.fromarray(mask).save(broken / "mask" / "0001.png")
    capsys.readouterr()
    assert main(["verify", str(broken)]) == 2
    printed = capsys.readouterr().out
    assert "image/0003.png has no mask" in printed and "0001.png is not binary" in printed
    assert main(["build", "--out", str(out), "--flickr-landscape", str(tmp_path),
                 "--mask-objects", str(raw["coco_annotations"])]) == 2
    assert "not empty" in capsys.readouterr().err


def test_verify_domain_blocks(tmp_path):
    from tests.helpers import write_misato_folder

    root = write_misato_folder(tmp_path / "m", n=4, size=16)
    (root / "manifest.csv").write_text("name,domain\n0000,indoor\n0001,landscape\n0002,indoor\n0003,building\n")
    problems = verify(root)
    assert any("split into several index blocks" in p for p in problems)
    assert any("out of order" in p for p in problems)
    release = write_misato_folder(tmp_path / "r", n=3, size=16, names=["0000", "0500", "1999"])
    assert any("consecutive" in p for p in verify(release))


def test_cli_build_end_to_end(tmp_path, raw, monkeypatch, capsys):
    """All documented flags reach build(); the default generator gets the COCO annotations as object source."""
    import misato.build.builder as builder

    seen = {}

    def fake_default(size, ratio_range, objects):
        seen.update(size=size, ratio_range=ratio_range, objects=objects)
        return BoxMasks(size)

    monkeypatch.setattr(builder, "default_mask_generator", fake_default)
    model = tiny_clip_model(tmp_path / "clip")
    argv = ["build", "--out", str(tmp_path / "out"), "--size", str(SIZE), "--per-domain", "2", "--seed", "3",
            "--megadepth", str(raw["megadepth"]), "--coco-images", str(raw["coco_images"]),
            "--coco-annotations", str(raw["coco_annotations"]), "--domain", f"extra={raw['domains'][0][1]}",
            "--clip-model", model, "--clip-pretrained", "none", "--device", "cpu", "--batch-size", "4",
            "--workers", "0", "--feature-cache", str(tmp_path / "cache"), "--mask-ratio-range", "0.05", "0.7"]
    assert main(argv) == 0
    assert "6 images (building 2, background 2, extra 2); 0 raw files skipped" in capsys.readouterr().out
    assert seen == {"size": SIZE, "ratio_range": (0.05, 0.7), "objects": str(raw["coco_annotations"])}
    info = json.loads((tmp_path / "out" / "build.json").read_text())
    assert info["arguments"]["seed"] == 3 and info["arguments"]["batch_size"] == 4
    assert main(["verify", str(tmp_path / "out")]) == 0
    assert main(argv + ["--resume"]) == 0 and "already complete" in capsys.readouterr().out


def test_openai_torchscript_archive_loads(tmp_path):
    """A TorchScript archive in OpenAI's layout (keys, extra scalars, fp16, no attn_mask) loads with the same outputs."""
    from evaluate.features.clip import save_random_openai_clip

    vision = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16}
    text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
    config = {"model_cfg": {"embed_dim": 16, "quick_gelu": True, "vision_cfg": vision, "text_cfg": text},
              "preprocess_cfg": {}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    reference = save_random_openai_clip(tmp_path / "ViT-tiny.pt", vision_cfg=vision, text_cfg=text, embed_dim=16)
    loaded = load_clip(f"local-dir:{tmp_path}", str(tmp_path / "ViT-tiny.pt"), "cpu")
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.model.encode_image(images), reference.encode_image(images), atol=1e-5)
    assert loaded.weights_file_sha256 and "Normalize" in repr(loaded.preprocess)


def test_unreadable_file_is_listed_and_does_not_defeat_the_cache(tmp_path, encoder):
    write_flickr(tmp_path / "flickr", n=4)
    (tmp_path / "flickr" / "00001b.jpg").symlink_to(tmp_path / "gone.jpg")  # a dangling link: cannot be read
    items = read_flickr_landscape(tmp_path / "flickr")
    first = extract_features(items, encoder, tmp_path / "cache", batch_size=2, min_side=16, progress=False)
    assert list(first.problems) == [2] and first.problems[2].startswith("cannot read")
    assert first.hashes[2] is None and first.computed == 5
    again = extract_features(items, encoder, tmp_path / "cache", batch_size=2, min_side=16, progress=False)
    assert again.computed == 0 and again.problems == first.problems


def test_build_with_the_real_misato_mask_mixture(tmp_path, raw):
    """No injected generator: the `misato` preset draws object shapes from the COCO annotations."""
    import csv

    from misato.build import build

    encoder_model = tiny_clip_model(tmp_path / "clip")
    build(tmp_path / "out", megadepth=raw["megadepth"], coco_images=raw["coco_images"],
          coco_annotations=raw["coco_annotations"], size=SIZE, per_domain=2, seed=1, clip_model=encoder_model,
          clip_pretrained="none", device="cpu", batch_size=4, feature_cache=tmp_path / "cache",
          mask_ratio_range=(0.02, 0.9), progress=False)
    assert verify(tmp_path / "out") == []
    with open(tmp_path / "out" / "manifest.csv", newline="") as handle:
        kinds = [row["mask_kinds"] for row in csv.DictReader(handle)]
    assert len(kinds) == 4 and all(kinds)
    assert set("+".join(kinds).split("+")) <= {"object", "comod", "lama"}


def test_verify_reports_malformed_manifest_and_build_json_without_crashing(tmp_path):
    from tests.helpers import write_misato_folder

    root = write_misato_folder(tmp_path / "m", names=["0000", "0001", "abc"], size=16)
    (root / "manifest.csv").write_text("name,domain,index,hole_ratio\n0000,landscape,0,oops\n0001,landscape,1,0.1\n"
                                       "abc,landscape,x,0.1\n")
    (root / "build.json").write_text("{not json")
    problems = verify(root)
    assert any("'oops' is not a number" in p for p in problems)
    assert any("build.json is unreadable" in p for p in problems)
    (root / "build.json").write_text('{"counts": [1]}')
    assert any("build.json is unreadable or malformed" in p for p in verify(root))


_PEAK_CHILD = """
import sys, torch, open_clip
from misato.build.features import ClipEncoder, feature_memory_bytes
torch.set_num_threads(1)
model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
encoder = ClipEncoder(model=model, preprocess=None, model_name="ViT-B-32", pretrained="none", weights_digest="", device="cpu")
def peak():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
batch = int(sys.argv[1])
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current size
start = peak()
with torch.inference_mode():
    model.encode_image(torch.zeros(batch, 3, 224, 224))
print(peak() - start, feature_memory_bytes(encoder, batch, 0))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_feature_memory_estimate_bounds_the_measured_peak():
    import subprocess
    import sys

    def peak_and_estimate(batch: int) -> tuple[int, int]:  # each in a fresh process: nothing reused between them
        child = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(batch)], capture_output=True, text=True, check=True)
        peak, estimate = map(int, child.stdout.split())
        return peak, estimate

    (small_peak, small_estimate), (large_peak, large_estimate) = peak_and_estimate(8), peak_and_estimate(40)
    measured, estimated = large_peak - small_peak, large_estimate - small_estimate  # per 32 images, no fixed costs
    assert measured <= estimated <= 2.5 * measured, (measured, estimated)
    assert large_peak <= large_estimate


def test_features_that_cannot_fit_are_refused_before_any_work(tmp_path, raw, encoder, monkeypatch):
    monkeypatch.setenv("MISATO_MEMORY_LIMIT", "200M")
    items = read_flickr_landscape(raw["flickr_landscape"])
    with pytest.raises(MisatoError, match=r"CLIP .* with --batch-size 4096 and --workers 0 needs about .*MISATO_MEMORY_LIMIT"):
        extract_features(items, encoder, tmp_path / "cache", batch_size=4096, progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_a_plain_state_dict_for_an_openai_model_warns_about_quickgelu(tmp_path):
    import warnings

    import open_clip

    state = tmp_path / "vit-b-32.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), state)
    with pytest.warns(UserWarning, match="--clip-model ViT-B-32-quickgelu"):
        load_clip("ViT-B-32", str(state))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        encoder = load_clip("ViT-B-32-quickgelu", str(state))
    activations = {type(m).__name__ for m in encoder.model.visual.modules()}
    assert "QuickGELU" in activations and "GELU" not in activations


def _killed_after_first_image(out: Path, flickr: Path, encoder, cache: Path) -> None:
    """A landscape-only build of ``flickr`` stopped (as by a kill) once image 0000 is written."""

    def stop(step, count):
        if step == "write":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(out, {"flickr_landscape": flickr}, encoder, cache, on_step=stop)
    assert (out / "image" / "0000.png").is_file() and not (out / "image" / "0001.png").exists()


def _same_size_and_mtime_other_bytes(path: Path) -> None:
    """Flip one byte and set the modification time back: only the change time (and the content) tell."""
    status = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


@pytest.mark.parametrize("index, change", [(0, "rewrite"), (2, "rewrite"), (0, "same size and mtime")])
def test_resume_refuses_a_raw_file_rewritten_under_the_same_name(tmp_path, encoder, index, change):
    """Image ``index`` (0: already written, 2: still to write) comes from a file replaced while the build was
    stopped: resuming would mix two versions of the raw data, so it is refused naming the file."""
    write_flickr(tmp_path / "flickr", n=6)
    out = tmp_path / "out"
    _killed_after_first_image(out, tmp_path / "flickr", encoder, tmp_path / "cache")
    plan = json.loads((out / ".misato-build" / "plan.json").read_text())
    source = tmp_path / "flickr" / plan["entries"][index]["candidates"][0]
    if change == "rewrite":
        from tests.misato.test_build_support import photo, write_jpeg

        write_jpeg(source, photo(99))
    else:
        _same_size_and_mtime_other_bytes(source)
    with pytest.raises(MisatoError, match=f"^{source}: changed since the build in {out} selected it .*--overwrite"):
        run(out, {"flickr_landscape": tmp_path / "flickr"}, encoder, tmp_path / "cache", resume=True)
    assert not (out / "image" / "0001.png").exists()  # refused before writing anything more


def test_resume_accepts_a_touched_file_with_the_same_bytes(tmp_path, encoder):
    write_flickr(tmp_path / "flickr", n=6)
    reference = tmp_path / "reference"
    run(reference, {"flickr_landscape": tmp_path / "flickr"}, encoder, tmp_path / "cache")
    out = tmp_path / "out"
    _killed_after_first_image(out, tmp_path / "flickr", encoder, tmp_path / "cache")
    for path in (tmp_path / "flickr").iterdir():
        path.write_bytes(path.read_bytes())  # new modification and change times, same content
    run(out, {"flickr_landscape": tmp_path / "flickr"}, encoder, tmp_path / "cache", resume=True)
    assert folder_bytes(out) == folder_bytes(reference)


def test_a_file_changed_during_the_build_is_refused_at_its_write(tmp_path, encoder):
    """Rewritten after its features were computed: the bytes to crop no longer have the sha256 the plan holds."""
    from tests.misato.test_build_support import photo, write_jpeg

    write_flickr(tmp_path / "flickr", n=6)

    def rewrite_all(step, count):
        if step == "features":
            for k, path in enumerate(sorted((tmp_path / "flickr").iterdir())):
                write_jpeg(path, photo(50 + k))

    with pytest.raises(MisatoError, match="flickr/00000.jpg: changed since the build"):
        run(tmp_path / "out", {"flickr_landscape": tmp_path / "flickr"}, encoder, tmp_path / "cache",
            batch_size=8, on_step=rewrite_all)
    assert not (tmp_path / "out" / "image").exists()


def test_overwrite_replaces_only_what_a_build_wrote(tmp_path, encoder):
    """After a stopped build, ``overwrite`` with other settings gives a fresh build's bytes; the user's own files
    (beside the outputs and inside image/) stay. ``overwrite`` also replaces a complete build."""
    write_flickr(tmp_path / "flickr", n=6)
    raw = {"flickr_landscape": tmp_path / "flickr"}
    out = tmp_path / "out"
    _killed_after_first_image(out, tmp_path / "flickr", encoder, tmp_path / "cache")
    (out / "notes.txt").write_text("mine")
    (out / "image" / "README").write_text("mine too")
    with pytest.raises(MisatoError, match="either --resume or --overwrite"):
        run(out, raw, encoder, tmp_path / "cache", seed=4, resume=True, overwrite=True)
    run(out, raw, encoder, tmp_path / "cache", seed=4, overwrite=True)
    run(tmp_path / "fresh", raw, encoder, tmp_path / "cache", seed=4)
    rebuilt = folder_bytes(out)
    assert rebuilt.pop("notes.txt") == b"mine" and rebuilt.pop("image/README") == b"mine too"
    assert rebuilt == folder_bytes(tmp_path / "fresh")
    run(tmp_path / "fresh", raw, encoder, tmp_path / "cache", overwrite=True)  # seed 0 over the complete seed-4 build
    run(tmp_path / "seed0", raw, encoder, tmp_path / "cache")
    assert folder_bytes(tmp_path / "fresh") == folder_bytes(tmp_path / "seed0")


def test_an_overwrite_refused_on_its_settings_leaves_a_folder_the_next_build_starts_in(tmp_path, encoder):
    """``overwrite`` removes image/ and mask/ once emptied, so an overwrite refused later (too few images for
    ``per_domain``) leaves an empty folder, not empty sub-folders that would block every later build."""
    write_flickr(tmp_path / "flickr", n=6)
    raw = {"flickr_landscape": tmp_path / "flickr"}
    run(tmp_path / "out", raw, encoder, tmp_path / "cache")
    with pytest.raises(MisatoError, match="6 usable images, but 7"):
        run(tmp_path / "out", raw, encoder, tmp_path / "cache", per_domain=7, overwrite=True)
    assert not any((tmp_path / "out").iterdir())
    run(tmp_path / "out", raw, encoder, tmp_path / "cache", per_domain=2)
