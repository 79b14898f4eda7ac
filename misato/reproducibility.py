"""Context managers that change torch's process-wide state only for their block, then restore it.

Library code uses these instead of setting global state: :func:`seeded` for module initialisation that draws
from torch's default generator, :func:`float32_matmul` for reported numbers that TF32 would change.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU default generator seeded with ``seed``; its previous state is restored
    afterwards (``torch.random.fork_rng``), so callers' random streams are untouched. Use it where a library
    (``nn.Module`` constructors) draws from the default generator and takes no ``torch.Generator``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def float32_matmul() -> Iterator[None]:
    """Run the block with TF32 off for CUDA matmuls and cuDNN convolutions (full float32), restoring both flags
    afterwards."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
