"""CLIP score: preprocessing against open_clip's transform, the scorer against a direct computation with the
reference model, masking, weight records and missing-file errors.

The networks are random CLIPs written as OpenAI TorchScript archives: a one-layer ViT for the mechanism, and the
real ViT-L/14 image tower once (slow: about three minutes and 5 GB on 2 shared cores).
"""
from __future__ import annotations

import hashlib

import numpy as np
import open_clip
import pytest
import skimage.data
import torch
from PIL import Image
from scipy.spatial.distance import cosine

from evaluate.features.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    build_clip_scorer,
    clip_preprocess,
    masked_clip_inputs,
    save_random_openai_clip,
)
from evaluate.functional import clip_score
from misato.errors import MisatoError

TINY_VISION = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16}


def photos() -> list[np.ndarray]:
    """Real photos in several aspect ratios, including odd sides (centre-crop offsets of .5 round to even)."""
    names = ("astronaut", "chelsea", "coffee", "rocket")
    astronaut, chelsea, coffee, rocket = (getattr(skimage.data, name)() for name in names)
    odd_sides = [astronaut[:301, :450], rocket[:427, :229], chelsea[:181, :180], chelsea[:150, :97]]
    return [astronaut, chelsea, coffee, rocket, *odd_sides]


def open_clip_transform(size: int):
    """open_clip's own eval transform for OpenAI weights (bicubic, shortest side, centre crop, OpenAI mean/std)."""
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return open_clip.image_transform(size, is_train=False, mean=mean, std=std)


def random_mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    """``bool [H, W]``: a rectangle hole plus scattered hole pixels."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.1
    h, w = shape
    mask[h // 4 : h // 4 + h // 2, w // 5 : w // 5 + w // 3] = True
    return mask


def pairs(seed: int = 0, size: tuple[int, int] = (72, 96)):
    """Three (prediction, ground truth, mask) triples of uint8 [H, W, 3] photos and a bool [H, W] mask."""
    rng = np.random.default_rng(seed)
    triples = []
    for index, photo in enumerate(photos()[:3]):
        gt = np.array(Image.fromarray(photo).resize(size[::-1], Image.Resampling.BILINEAR))
        noise = rng.integers(-40, 41, gt.shape)
        pred = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
        triples.append((pred, gt, random_mask(gt.shape[:2], seed + index)))
    return triples


def as_tensors(triples):
    """Batched tensors as the evaluator holds them: uint8 [N, 3, H, W] ×2 and bool [N, H, W]."""
    pred = torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p, _, _ in triples])
    gt = torch.stack([torch.from_numpy(g).permute(2, 0, 1) for _, g, _ in triples])
    return pred, gt, torch.stack([torch.from_numpy(m) for _, _, m in triples])


def reference_scores(model, triples, size: int) -> np.ndarray:
    """The CLIP score computed directly: PIL images of x·m, open_clip's transform, encode_image, cosine."""
    transform = open_clip_transform(size)
    scores = []
    for pred, gt, mask in triples:
        m = mask.astype(np.uint8)[:, :, None]
        inputs = torch.stack([transform(Image.fromarray(x * m)) for x in (pred, gt)])
        with torch.inference_mode():
            features = model.encode_image(inputs)
        features = features.double() / features.double().norm(dim=-1, keepdim=True)
        scores.append(float((features[0] * features[1]).sum()))
    return np.array(scores)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "ViT-tiny.pt"
    model = save_random_openai_clip(path, vision_cfg=TINY_VISION, embed_dim=16, seed=3)
    return path, model, build_clip_scorer(weights_path=path)


@pytest.mark.parametrize("size", [224, 32])
def test_preprocess_equals_open_clip_transform_on_photos(size):
    assert (OPENAI_MEAN, OPENAI_STD) == (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    transform = open_clip_transform(size)
    for photo in photos():
        ours = clip_preprocess(photo, size)
        assert ours.dtype == torch.float32 and ours.shape == (3, size, size)
        assert torch.equal(ours, transform(Image.fromarray(photo))), photo.shape


def test_preprocess_equals_the_loaded_encoders_transform(tiny):
    _, _, scorer = tiny
    for photo in photos()[:4]:
        assert torch.equal(clip_preprocess(photo, scorer.input_size), scorer.encoder.preprocess(Image.fromarray(photo)))


def test_scorer_equals_direct_computation(tiny):
    _, model, scorer = tiny
    triples = pairs()
    scores = scorer.score(*as_tensors(triples))
    assert scores.dtype == np.float64 and scores.shape == (3,)
    reference = reference_scores(model, triples, 32)
    # random CLIPs embed everything nearly alike: compare the distances from 1, which differ between pairs
    np.testing.assert_allclose(1 - scores, 1 - reference, rtol=1e-3)
    assert np.ptp(1 - scores) > 0.5 * np.max(1 - scores)


def test_score_on_worker_inputs_and_pairs_of_different_sizes(tiny):
    _, model, scorer = tiny
    triples = pairs()[:2] + pairs(seed=5, size=(64, 48))[2:]
    inputs = torch.stack([masked_clip_inputs(p, g, m, scorer.input_size) for p, g, m in triples])
    from_inputs = scorer.score_inputs(inputs[:, 0], inputs[:, 1])
    from_lists = scorer.score([torch.from_numpy(p).permute(2, 0, 1) for p, _, _ in triples],
                              [torch.from_numpy(g).permute(2, 0, 1) for _, g, _ in triples],
                              [torch.from_numpy(m) for _, _, m in triples])
    np.testing.assert_array_equal(from_inputs, from_lists)
    np.testing.assert_allclose(from_inputs, reference_scores(model, triples, 32), atol=1e-5)


def test_pixels_outside_the_hole_do_not_change_the_score(tiny):
    _, _, scorer = tiny
    triples = pairs()
    rng = np.random.default_rng(7)
    changed_outside, changed_inside = [], []
    for pred, gt, mask in triples:
        outside = (~mask)[:, :, None]
        noise_p, noise_g = (rng.integers(0, 256, x.shape, dtype=np.uint8) for x in (pred, gt))
        changed_outside.append((np.where(outside, noise_p, pred), np.where(outside, noise_g, gt), mask))
        changed_inside.append((np.where(outside, pred, noise_p), gt, mask))
    base = scorer.score(*as_tensors(triples))
    np.testing.assert_array_equal(scorer.score(*as_tensors(changed_outside)), base)
    assert np.all(np.abs(scorer.score(*as_tensors(changed_inside)) - base) > 1e-6)


def test_identical_hole_content_scores_one(tiny):
    _, _, scorer = tiny
    pred, gt, mask = as_tensors(pairs())
    np.testing.assert_allclose(scorer.score(gt, gt, mask), 1.0, atol=1e-12)


def test_weight_sha256_is_recorded(tiny):
    path, _, scorer = tiny
    assert scorer.weights == {"clip-vit-l-14-openai": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MISATO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match=r"weights file for 'clip-vit-l-14-openai' not found: .*nope\.pt") as missing:
        build_clip_scorer(weights_path=tmp_path / "nope.pt")
    with pytest.raises(MisatoError, match=r"ViT-L-14\.pt.*not found in .*offline.*openaipublic") as absent:
        build_clip_scorer(weights_dir=tmp_path / "weights")
    assert "\n" not in str(missing.value) + str(absent.value)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ViT-L-14.pt").write_bytes(b"not the OpenAI file")
    with pytest.raises(MisatoError, match="does not match the official ViT-L-14.pt"):
        build_clip_scorer(weights_dir=tmp_path / "weights")
    state_dict = tmp_path / "state.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, state_dict)
    with pytest.raises(MisatoError, match="not OpenAI's TorchScript CLIP archive"):
        build_clip_scorer(weights_path=state_dict)


def test_clip_score_function_against_scipy():
    rng = np.random.default_rng(0)
    pred, gt = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
    expected = [1.0 - cosine(p, g) for p, g in zip(pred, gt)]
    np.testing.assert_allclose(clip_score(pred, gt), expected, rtol=1e-12)
    np.testing.assert_allclose(clip_score(torch.from_numpy(3 * pred).float(), gt), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        clip_score(pred, gt[:4])


@pytest.mark.slow
def test_real_vit_l_14_architecture(tmp_path):
    """The real ViT-L/14 image tower (24 layers, width 1024, patch 14, 224 px) through the official file format."""
    path = tmp_path / "ViT-L-14.pt"
    model = save_random_openai_clip(path, seed=1)
    scorer = build_clip_scorer(weights_path=path)
    assert scorer.input_size == 224 and scorer.encoder.model.visual.transformer.layers == 24
    triples = pairs(size=(160, 200))[:2]
    np.testing.assert_allclose(scorer.score(*as_tensors(triples)), reference_scores(model, triples, 224), atol=1e-5)


def test_clip_is_an_optional_evaluator_metric_equal_to_the_scorer(tiny, tmp_path):
    """`misato evaluate --metrics psnr,clip --clip-weights FILE`: per-image CLIP = the scorer on the composite and
    the ground truth with the binarised mask; the mean is the metric; the weight digest is recorded."""
    from evaluate import evaluate_folder
    from evaluate.metric_info import DEFAULT_METRICS
    from evaluate.functional import composite
    from misato.cli import main
    from misato.io import read_image, read_mask
    from tests.helpers import write_misato_folder, write_predictions

    path, _, scorer = tiny
    assert "clip" not in DEFAULT_METRICS
    gt = write_misato_folder(tmp_path / "gt", n=3, size=48)
    pred = write_predictions(gt, tmp_path / "pred")
    result = evaluate_folder(pred, gt, tmp_path / "run", metrics="psnr,clip", clip_weights=path, progress=False)
    names = sorted(p.stem for p in (gt / "image").glob("*.png"))
    images = [read_image(gt / "image" / f"{n}.png") for n in names]
    holes = [read_mask(gt / "mask" / f"{n}.png") for n in names]
    merged = [composite(read_image(pred / f"{n}.png"), g, m.astype(np.uint8) * 255) for n, g, m in
              zip(names, images, holes)]
    chw = [torch.from_numpy(c).permute(2, 0, 1) for c in merged]
    expected = scorer.score(chw, [torch.from_numpy(g).permute(2, 0, 1) for g in images],
                            [torch.from_numpy(m) for m in holes])
    np.testing.assert_allclose([row["clip"] for row in result.rows], expected, rtol=1e-6)
    assert result.summary["metrics"]["clip"] == pytest.approx(float(np.mean(expected)), rel=1e-9)
    assert result.summary["weights"]["clip-vit-l-14-openai"] == scorer.weights["clip-vit-l-14-openai"]
    from importlib.metadata import version
    assert result.summary["provenance"]["packages"]["open-clip-torch"] == version("open-clip-torch")
    without = evaluate_folder(pred, gt, None, metrics="psnr", progress=False)
    assert "open-clip-torch" not in without.summary["provenance"]["packages"]
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "cli"),
                 "--metrics", "clip", "--clip-weights", str(path)]) == 0
