"""Scale-out across processes started by ``torchrun`` or ``accelerate launch``: the one distributed helper.

The rule, everywhere:

- Only command-line entry points join a process group, with :func:`init_from_env` (``WORLD_SIZE`` > 1 in the
  environment). Library calls (:func:`setup`, the builder, the evaluator) use the group the caller joined and
  never create one; without a group they run as a single process.
- Device: ``None`` means CUDA when available, else CPU; a bare ``"cuda"`` in a group of several processes means
  ``cuda:$LOCAL_RANK`` (one GPU per process); an explicit ``"cuda:N"`` or ``"cpu"`` is used as given; asking for
  CUDA where there is none is a :class:`~misato.errors.MisatoError`. The backend is NCCL for CUDA devices and
  gloo otherwise.
- Work is sharded by rank (each caller decides how); results are gathered to every rank and rank 0 writes.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from misato.errors import MisatoError


_joined = False
"""Whether :func:`init_from_env` made the current process group (:func:`leave_group` destroys only that one)."""


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised torch.distributed group, ``(0, 1)`` without one (then torch is
    not imported: no group can exist before ``torch.distributed`` is, so weight-free jobs stay torch-free)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str | None) -> str:
    """This process's device under the rule in the module docstring.

    Raises:
        MisatoError: CUDA asked for where none is available.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise MisatoError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if device == "cuda" and (rank_and_world()[1] > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank_and_world()[0]))}"
    return device


def init_from_env(device: str | None = None) -> str:
    """For command-line entry points only: join the process group ``torchrun`` describes, if any.

    Does nothing for a single process or when a group already exists. Otherwise initialises torch.distributed
    from the environment (NCCL for a CUDA device, gloo otherwise) and makes this rank's GPU the current CUDA
    device (process-wide state, which is why library code never calls this).

    Returns:
        The device this process should use (see :func:`local_device`).
    """
    import torch
    import torch.distributed as dist

    device = local_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return device
    global _joined
    cuda = torch.device(device).type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    _joined = True
    if cuda:
        torch.cuda.set_device(device)
    return device


def leave_group() -> None:
    """For command-line entry points only: destroy the process group :func:`init_from_env` joined, if any, before
    the process exits (a group the caller made itself is left alone). Left to the interpreter's exit, its teardown could abort the process (exit -6 after a clean
    refusal, seen once in 2-rank runs under load)."""
    global _joined
    dist = sys.modules.get("torch.distributed")
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False


def setup(device: str | None) -> tuple[int, int, str]:
    """``(rank, world size, device)`` for a library call, in the group the caller joined (never creates one)."""
    rank, world = rank_and_world()
    return rank, world, local_device(device)


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` without a group."""
    if rank_and_world()[1] == 1:
        return [value]
    import torch.distributed as dist

    world = rank_and_world()[1]
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, value)
    return shards


def gather(rows: list[dict[str, Any]], real: dict, fake: dict) -> tuple[list[dict[str, Any]], dict, dict]:
    """The evaluator's per-image rows and ``{name: feature}`` dicts of all ranks, merged (identity alone)."""
    merged_rows: list[dict[str, Any]] = []
    merged_real: dict = {}
    merged_fake: dict = {}
    for shard_rows, shard_real, shard_fake in all_gather_objects((rows, real, fake)):
        merged_rows += shard_rows
        merged_real.update(shard_real)
        merged_fake.update(shard_fake)
    return merged_rows, merged_real, merged_fake


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (identity without a group)."""
    if rank_and_world()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if rank_and_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()
