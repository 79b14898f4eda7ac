"""Sharding across processes started by ``torchrun`` or ``accelerate launch`` (one process per GPU or node slot).

Each rank scores ``names[rank::world]``; per-image rows and features are gathered to every rank (they are
small: ``N × 2048`` floats per set) and rank 0 writes the outputs.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def setup(device: str) -> tuple[int, int, str]:
    """Join the process group when the launcher asked for one.

    Returns:
        ``(rank, world_size, device)``; with CUDA, each rank takes ``cuda:$LOCAL_RANK``.
    """
    if not dist.is_available():
        return 0, 1, device
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if not dist.is_initialized():
        return 0, 1, device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', dist.get_rank()))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def gather(
    rows: list[dict[str, Any]], real: dict[str, np.ndarray], fake: dict[str, np.ndarray]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All ranks' rows and features, merged (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows, real, fake
    shards: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, (rows, real, fake))
    merged_rows, merged_real, merged_fake = [], {}, {}
    for shard_rows, shard_real, shard_fake in shards:
        merged_rows += shard_rows
        merged_real.update(shard_real)
        merged_fake.update(shard_fake)
    return merged_rows, merged_real, merged_fake


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
