"""The folder evaluator with (random-init, official-format) networks: every number against a direct route."""
import json
import os
import socket

import numpy as np
import pytest
import torch

from evaluate import evaluate_folder
from evaluate.features import build_feature_extractor, build_lpips, save_random_official_weights
from evaluate.functional import composite, fid, inception_discriminative_scores
from misato.distributed import init_from_env
from misato.io import read_image, read_mask_uint8
from misato.weights import get_entry
from tests.helpers import write_misato_folder, write_predictions


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {
        name: save_random_official_weights(name, folder / get_entry(name).filename, seed=0)
        for name in ("inception-v3-imagenet", "fid-inception", "alexnet")
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    gt = write_misato_folder(root / "gt", names=["0001", "0002", "0501", "0502", "1001", "1501"], size=64)
    return gt, write_predictions(gt, root / "pred")


def _run(data, weights, tmp_path, **options):
    gt, pred = data
    protocol = options.pop("protocol", "asuka")
    inception = weights["inception-v3-imagenet" if protocol == "asuka" else "fid-inception"]
    return evaluate_folder(
        pred, gt, protocol=protocol, inception_weights=inception, alexnet_weights=weights["alexnet"],
        cache_dir=tmp_path / "cache", progress=False, **{"ids_pca": 4, **options},
    )


def _direct(data, weights, kind, weight_name):
    """Composites and ground truths pushed through the networks directly, image by image."""
    gt, pred = data
    extractor = build_feature_extractor(kind, weights_path=weights[weight_name])
    lpips_net = build_lpips("alex", backbone_path=weights["alexnet"])
    real, fake, distances = [], [], []
    for name in ["0001", "0002", "0501", "0502", "1001", "1501"]:
        g = read_image(gt / "image" / f"{name}.png")
        c = composite(read_image(pred / f"{name}.png"), g, read_mask_uint8(gt / "mask" / f"{name}.png"))
        to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        with torch.no_grad():
            real.append(extractor(to_t(g))[0].numpy())
            fake.append(extractor(to_t(c))[0].numpy())
            distances.append(float(lpips_net(to_t(c), to_t(g))[0]))
    return np.stack(real), np.stack(fake), np.array(distances)


@pytest.mark.parametrize("protocol,kind,weight_name", [
    ("asuka", "torchvision-inception", "inception-v3-imagenet"),
    ("comod", "fid-inception", "fid-inception"),
])
def test_scores_equal_the_direct_computation(data, weights, tmp_path, protocol, kind, weight_name):
    result = _run(data, weights, tmp_path, protocol=protocol, use_cache=False)
    real, fake, distances = _direct(data, weights, kind, weight_name)
    np.testing.assert_allclose([r["lpips"] for r in result.rows], distances, rtol=1e-5, atol=1e-7)
    assert result.summary["metrics"]["fid"] == pytest.approx(fid(real, fake), rel=1e-4)
    with pytest.warns(UserWarning):
        u_ids, p_ids = inception_discriminative_scores(real, fake, pca_dim=4)
    assert result.summary["metrics"]["uids"] == pytest.approx(u_ids, abs=1e-9)
    assert result.summary["metrics"]["pids"] == pytest.approx(p_ids, abs=1e-9)
    assert set(result.summary["weights"]) >= {weight_name, "alexnet", "lpips-alex-v0.1"}
    assert result.summary["protocol"] == protocol


def test_kid_is_optional_and_equals_the_functional_kid_on_the_same_features(data, weights, tmp_path):
    from evaluate.functional import kid

    default = _run(data, weights, tmp_path, metrics="psnr", use_cache=False)
    assert "kid" not in default.summary["metrics"] and "kid" not in default.summary
    result = _run(data, weights, tmp_path, metrics="fid,kid", use_cache=False)
    real, fake, _ = _direct(data, weights, "torchvision-inception", "inception-v3-imagenet")
    expected, expected_std = kid(real, fake, subsets=100, subset_size=6, seed=0)
    assert result.summary["metrics"]["kid"] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert result.summary["kid"] == {"subsets": 100, "subset_size": 6, "seed": 0,
                                     "std": pytest.approx(expected_std, rel=1e-4, abs=1e-9)}


def test_batch_size_does_not_change_numbers(data, weights, tmp_path):
    one = _run(data, weights, tmp_path, batch_size=1, use_cache=False)
    four = _run(data, weights, tmp_path, batch_size=4, use_cache=False)
    assert one.rows == four.rows and one.summary["metrics"] == four.summary["metrics"]


def test_cold_warm_and_partial_caches_give_identical_summaries(data, weights, tmp_path):
    """Same inputs, same numbers: summary.json is byte-identical whichever ground-truth features were cached."""
    cold = _run(data, weights, tmp_path, out=tmp_path / "cold")
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 6
    _run(data, weights, tmp_path, out=tmp_path / "warm")
    for entry in entries[::2]:  # half the cache gone
        entry.unlink()
    _run(data, weights, tmp_path, out=tmp_path / "partial", batch_size=4)
    entries[1].write_bytes(b"garbage")  # a damaged entry is recomputed, not trusted
    _run(data, weights, tmp_path, out=tmp_path / "damaged", batch_size=3)
    expected = (tmp_path / "cold" / "summary.json").read_text()
    for run in ("warm", "partial", "damaged"):
        assert (tmp_path / run / "summary.json").read_text() == expected, run
    assert json.loads(expected)["metrics"] == cold.summary["metrics"]


def test_no_cache_writes_nothing(data, weights, tmp_path):
    _run(data, weights, tmp_path, use_cache=False)
    assert not (tmp_path / "cache").exists()


def test_small_n_errors(data, weights, tmp_path):
    from misato.errors import MisatoError

    with pytest.raises(MisatoError, match="--ids-pca"):
        _run(data, weights, tmp_path, ids_pca=None)  # asuka default: PCA to 64 with 6 images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, data, weights, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    init_from_env("cpu")  # as the CLI does: library calls never join a group themselves
    gt, pred = data
    evaluate_folder(pred, gt, out, inception_weights=weights["inception-v3-imagenet"],
                    alexnet_weights=weights["alexnet"], ids_pca=4, batch_size=1, use_cache=False, progress=False)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one(data, weights, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each rank: the thread count changes the last bits of a convolution
    try:
        single = _run(data, weights, tmp_path, batch_size=1, use_cache=False)
    finally:
        torch.set_num_threads(threads)
    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), data, weights, tmp_path / "dist"), nprocs=2)
    summary = json.loads((tmp_path / "dist" / "summary.json").read_text())
    assert summary["n"] == 6
    for metric, value in single.summary["metrics"].items():
        assert summary["metrics"][metric] == value, metric


def _global_state():
    return (torch.random.get_rng_state(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_num_threads(), torch.distributed.is_initialized())


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluate_folder_leaves_the_callers_global_state_alone(data, weights, tmp_path, workers, capsys):
    torch.manual_seed(11)
    before = _global_state()
    _run(data, weights, tmp_path, workers=workers, batch_size=4)
    after = _global_state()
    assert torch.equal(after[0], before[0]), "torch's global random stream moved"
    assert after[1:] == before[1:]
    assert capsys.readouterr().out == ""  # warnings and the progress bar only, never prints
