"""Two gloo processes (accelerate on CPU) train the same weights as one process with the doubled batch."""
from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from asuka.train.loop import run
from asuka.train.mae import MAEStage
from tests.asuka.train.conftest import common_flags


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    run(MAEStage, argv)


def test_two_processes_equal_one_process_with_the_doubled_batch(train_inputs, tmp_path):
    extra = ["--mae-init", str(train_inputs["mae"]), "--lr", "1e-3", "--warmup-steps", "0"]
    run(MAEStage, common_flags(train_inputs, tmp_path / "one", steps=3, batch=4) + extra)
    two = common_flags(train_inputs, tmp_path / "two", steps=3, batch=2) + extra
    mp.start_processes(_worker, args=(2, _free_port(), two), nprocs=2, join=True, start_method="spawn")
    one_weights = load_file(tmp_path / "one" / "mae" / "diffusion_pytorch_model.safetensors")
    two_weights = load_file(tmp_path / "two" / "mae" / "diffusion_pytorch_model.safetensors")
    # The same samples, noise and update; only the order of the float additions differs (per-process means
    # averaged by all-reduce instead of one mean). Adam's g/sqrt(v) turns a rounding difference of a gradient near
    # zero into up to lr per step, so elements agree to a small fraction of lr·steps, and on average far closer.
    start = torch.load(train_inputs["mae"], weights_only=True)["model"]
    lr, steps = 1e-3, 3
    for key, value in one_weights.items():
        if value.is_floating_point() and not torch.equal(value, start[key]):
            difference = (two_weights[key] - value).abs()
            assert difference.max() <= 1e-2 * lr * steps, key
            assert difference.mean() <= 1e-3 * (value - start[key]).abs().mean(), key
    assert sum(not torch.equal(one_weights[k], start[k]) for k in one_weights) > 10

    record = json.loads((tmp_path / "two" / "train.json").read_text())
    assert record["world_size"] == 2 and record["global_batch"] == 4
