"""The one distributed helper: library calls never create a process group; the CLI entry point does."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from misato import distributed
from misato.errors import MisatoError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_group_everything_is_one_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # a launcher's environment alone does not make a library call join
    assert distributed.setup("cpu") == (0, 1, "cpu")
    assert not dist.is_initialized()
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_from_rank0(5) == 5
    assert distributed.gather([{"n": 1}], {"x": 1}, {}) == ([{"n": 1}], {"x": 1}, {})
    distributed.barrier()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only rule")
def test_device_rule_without_cuda():
    assert distributed.local_device(None) == "cpu"
    assert distributed.local_device("cpu") == "cpu"
    with pytest.raises(MisatoError, match="--device cuda:1: no CUDA device"):
        distributed.local_device("cuda:1")


def _worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    assert distributed.setup("cpu")[:2] == (0, 1)  # before the entry point joins: single process
    device = distributed.init_from_env("cpu")
    assert dist.is_initialized() and dist.get_backend() == "gloo" and device == "cpu"
    assert distributed.init_from_env("cpu") == "cpu"  # joining twice is a no-op
    assert distributed.setup("cpu") == (rank, world, "cpu")
    shared = distributed.all_gather_objects(rank * 10)
    rows, real, _ = distributed.gather([{"rank": rank}], {f"r{rank}": rank}, {})
    value = distributed.broadcast_from_rank0(f"from {rank}")
    distributed.barrier()
    results[rank] = (shared, rows, real, value)
    dist.destroy_process_group()


def test_the_entry_point_joins_the_group_torchrun_describes():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        shared, rows, real, value = results[rank]
        assert shared == [0, 10] and rows == [{"rank": 0}, {"rank": 1}] and real == {"r0": 0, "r1": 1}
        assert value == "from 0"


def test_the_command_line_leaves_the_group_it_joined(monkeypatch):
    """``misato.cli.main`` ends with :func:`misato.distributed.leave_group`: the group :func:`init_from_env` made is
    destroyed before exit, also when the command was refused; a group the caller made itself stays."""
    from misato.cli import main

    refused = ["masks", "--preset", "nosuch", "--n", "1", "--out", "/nonexistent/never"]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    assert main(refused) == 2 and dist.is_initialized()  # the caller's own group
    monkeypatch.setattr(distributed, "_joined", True)  # as init_from_env records it
    assert main(refused) == 2
    assert not dist.is_initialized()
    distributed.leave_group()  # nothing to leave: a no-op
