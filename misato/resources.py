"""Memory a job may use: estimated before the job starts, refused with the estimate and the limit when it cannot fit.

The limit is, in order: ``$MISATO_MEMORY_LIMIT`` (bytes, or a number with K/M/G/T, e.g. ``6G``; the documented
override, also for a machine shared with other jobs), psutil's available memory when psutil is installed, else
``MemAvailable`` of ``/proc/meminfo``. Where neither can be read, no limit is applied.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from misato.errors import MisatoError

MEMORY_LIMIT_ENV = "MISATO_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else all of the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_bytes(text: str) -> int:
    """``"6G"`` → 6 GiB in bytes (units K, M, G, T, powers of 1024; an optional trailing ``B``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise MisatoError(f"${MEMORY_LIMIT_ENV}={text!r}: expected a size such as 6G, 512M or 8000000000")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(count: float) -> str:
    """``1.5 GB``-style text (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def memory_limit() -> tuple[int, str] | None:
    """``(bytes, where the number comes from)``, or None when no limit can be read (see the module docstring)."""
    given = os.environ.get(MEMORY_LIMIT_ENV)
    if given:
        return parse_bytes(given), f"${MEMORY_LIMIT_ENV}"
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available), "available memory (psutil)"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(estimate: int, what: str) -> None:
    """Refuse a job whose estimated peak memory ``estimate`` (bytes) exceeds :func:`memory_limit`.

    Args:
        estimate: bytes the job needs at its peak, beyond what the process already holds.
        what: the job and the options that drive the estimate, for the message (e.g. ``"--size 8192 masks"``).
    Raises:
        MisatoError: saying the estimate, the limit, where the limit comes from and how to change it.
    """
    limit = memory_limit()
    if limit is not None and estimate > limit[0]:
        raise MisatoError(
            f"{what} needs about {format_bytes(estimate)} of memory but the limit is {format_bytes(limit[0])} "
            f"({limit[1]}); use smaller values, free memory, or set ${MEMORY_LIMIT_ENV} (e.g. 16G) to change the limit"
        )
