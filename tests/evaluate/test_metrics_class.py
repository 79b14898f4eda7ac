"""InpaintingMetrics (the stateful library class) against the folder evaluator, and its invariances."""
import json
import os
import socket
from importlib import metadata

import numpy as np
import pytest
import torch

from evaluate import evaluate_folder
from evaluate.features import save_random_official_weights
from evaluate.metrics import InpaintingMetrics
from misato.errors import MisatoError
from misato.io import read_image, read_mask_uint8
from misato.weights import get_entry
from tests.helpers import write_misato_folder, write_predictions

NAMES = ["0001", "0002", "0501", "1001", "1502"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {name: save_random_official_weights(name, folder / get_entry(name).filename, seed=0)
            for name in ("inception-v3-imagenet", "alexnet")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    gt = write_misato_folder(root / "gt", names=NAMES, size=48)
    return gt, write_predictions(gt, root / "pred")


@pytest.fixture(scope="module")
def tensors(data):
    """The same images in memory: pred, gt float32 [N, 3, H, W] in [0, 1], mask uint8 [N, 1, H, W]."""
    gt, pred = data
    as_float = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255  # noqa: E731
    preds = torch.stack([as_float(read_image(pred / f"{n}.png")) for n in NAMES])
    gts = torch.stack([as_float(read_image(gt / "image" / f"{n}.png")) for n in NAMES])
    masks = torch.stack([torch.from_numpy(read_mask_uint8(gt / "mask" / f"{n}.png"))[None] for n in NAMES])
    return preds, gts, masks


@pytest.fixture(scope="module")
def scorer(weights):
    return InpaintingMetrics("asuka", device="cpu", inception_weights=weights["inception-v3-imagenet"],
                             alexnet_weights=weights["alexnet"], ids_pca=4)


def _computed(scorer, batches, method="pred"):
    scorer.reset()
    for pred, gt, mask, names in batches:
        scorer.update(pred, gt, mask, names=names)
    return scorer.compute(method)


def test_class_on_tensors_equals_the_folder_evaluator_on_pngs(data, weights, tensors, scorer):
    gt, pred = data
    folder = evaluate_folder(pred, gt, inception_weights=weights["inception-v3-imagenet"],
                             alexnet_weights=weights["alexnet"], ids_pca=4, use_cache=False, batch_size=2,
                             progress=False)
    with pytest.warns(UserWarning, match="optimistic"):
        memory = _computed(scorer, [(*tensors, NAMES)])
    assert memory.rows == folder.rows
    for key in ("metrics", "by_domain", "by_mask_ratio", "weights", "ids_pca", "n", "method", "protocol"):
        assert memory.summary[key] == folder.summary[key], key
    assert set(memory.summary["metrics"]) == {"psnr", "ssim", "lpips", "fid", "uids", "pids", "grad"}
    assert folder.summary["provenance"]["packages"]["lpips"] == metadata.version("lpips")


@pytest.mark.filterwarnings("ignore:IDS on")
def test_batch_size_and_order_do_not_change_any_number(tensors, scorer):
    preds, gts, masks = tensors
    whole = _computed(scorer, [(preds, gts, masks, NAMES)])
    order = [4, 2, 0, 3, 1]
    one_by_one = _computed(scorer, [(preds[[i]], gts[[i]], masks[[i]], [NAMES[i]]) for i in order])
    assert one_by_one.rows == whole.rows and one_by_one.summary["metrics"] == whole.summary["metrics"]
    uint8 = _computed(scorer, [((preds * 255).round().to(torch.uint8), (gts * 255).round().to(torch.uint8),
                                masks[:, 0] >= 128, NAMES)])  # uint8 images, bool [N, H, W] masks
    assert [r["lpips"] for r in uint8.rows] == [r["lpips"] for r in whole.rows]
    assert uint8.summary["metrics"]["fid"] == whole.summary["metrics"]["fid"]


def test_batched_lpips_at_256_px_equals_one_pair_per_forward_bit_for_bit(weights):
    """From LPIPS_BATCH_MIN_SIDE up, pairs of one size share a forward on the CPU: every value must still be the
    one-pair forward's, whatever the batch size (1, 2, 3, 7) or the pair's place in it."""
    from evaluate.features import build_lpips
    from evaluate.metrics import LPIPS_BATCH_MIN_SIDE
    from tests.helpers import box_mask, smooth_image

    rng = np.random.default_rng(3)
    size = LPIPS_BATCH_MIN_SIDE
    gts = torch.from_numpy(np.stack([smooth_image(rng, size) for _ in range(7)])).permute(0, 3, 1, 2)
    preds = torch.from_numpy(rng.integers(0, 256, gts.shape, dtype=np.uint8))
    masks = torch.from_numpy(np.stack([box_mask(rng, size) for _ in range(7)]))
    names = [f"{i:04d}" for i in range(7)]
    scorer = InpaintingMetrics("asuka", metrics="lpips", alexnet_weights=weights["alexnet"])
    values = {}
    for batch in (1, 2, 3, 7):
        scorer.reset()
        for start in range(0, 7, batch):
            part = slice(start, start + batch)
            scorer.update(preds[part], gts[part], masks[part], names=names[part])
        values[batch] = [row["lpips"] for row in scorer.compute().rows]
    single = build_lpips("alex", backbone_path=weights["alexnet"])
    merged = torch.where(masks[:, None], preds, gts)
    with torch.inference_mode():
        alone = [float(single.distance_uint8(merged[i : i + 1], gts[i : i + 1])[0]) for i in range(7)]
        package = single(merged.float().div(255), gts.float().div(255))
    assert values[1] == values[2] == values[3] == values[7] == alone
    np.testing.assert_allclose(alone, package.numpy(), rtol=1e-6, atol=1e-7)  # the lpips package's own route


def test_masks_and_floats_are_read_the_one_way():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    pred = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    soft = torch.from_numpy(rng.integers(0, 256, (2, 1, 16, 16), dtype=np.uint8))
    cpu = InpaintingMetrics(metrics="psnr,ssim,grad")
    assert cpu.extractor is None and cpu.lpips_net is None
    cpu.update(pred, gt, soft)
    as_uint8 = cpu.compute().rows
    cpu.reset()
    # floats that round to the same 8-bit values; a float mask m is the PNG value round(m·255)
    cpu.update(pred.float() / 255 + 1e-3, gt.float() / 255 - 1e-3, soft.float() / 255)
    assert cpu.compute().rows == as_uint8
    cpu.reset()
    with pytest.raises(MisatoError, match="repeat"):
        cpu.update(pred, gt, soft, names=["a", "a"])
    with pytest.raises(MisatoError, match="must agree"):
        cpu.update(pred, gt[:, :, :8], soft)
    with pytest.raises(MisatoError, match="\\[0, 1\\]"):
        cpu.update(pred, gt, soft.float())
    with pytest.raises(MisatoError, match="no images"):
        cpu.compute()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, weights, tensors, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    preds, gts, masks = tensors
    scorer = InpaintingMetrics("asuka", inception_weights=weights["inception-v3-imagenet"],
                               alexnet_weights=weights["alexnet"], ids_pca=4)
    shard = list(range(rank, len(NAMES), world))
    scorer.update(preds[shard], gts[shard], masks[shard], names=[NAMES[i] for i in shard])
    result = scorer.compute("pred")
    (out / f"rank{rank}.json").write_text(json.dumps({"rows": result.rows, "metrics": result.summary["metrics"]}))
    torch.distributed.destroy_process_group()


@pytest.mark.filterwarnings("ignore:IDS on")
def test_two_gloo_processes_equal_one(weights, tensors, scorer, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _computed(scorer, [(*tensors, NAMES)])
    finally:
        torch.set_num_threads(threads)
    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), weights, tensors, tmp_path), nprocs=2)
    for rank in (0, 1):  # every rank holds the full result
        gathered = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert gathered["rows"] == json.loads(json.dumps(single.rows))
        assert gathered["metrics"] == single.summary["metrics"]
