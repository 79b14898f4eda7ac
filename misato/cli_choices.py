"""Option values the ``misato`` subcommands offer, spelled out here so that building the parser imports nothing
from ``evaluate`` (``misato --help`` stays fast and works beside Hugging Face's ``evaluate``). A test checks them
against their sources, :data:`evaluate.protocols.PROTOCOLS` and :data:`evaluate.metric_info.ALL_METRICS`."""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

PROTOCOL_CHOICES = ("asuka", "comod")
PROTOCOL_HELP = ("asuka: the official MISATO scripts (torchvision Inception-v3, PIL resize 342 + crop 299, IDS PCA to "
                 "the resolution); comod: Co-Mod-GAN / pytorch-fid convention (TF FID Inception, TF1 resize, no PCA)")
METRIC_NAMES = ("psnr", "ssim", "lpips", "fid", "uids", "pids", "grad", "kid", "clip")
MASK_PRESETS_WITHOUT_OBJECTS = (
    "lama-thin-512", "lama-medium-512", "lama-thick-512", "lama-thin-256", "lama-medium-256", "lama-thick-256",
    "comod-512", "mat-512", "mat-512-small", "mat-256", "mat-256-small", "rect", "complement-rect",
)
"""The mask presets that need no object source (:data:`misato.masks.presets.PRESETS` without ``needs_objects``): the
ones ``misato demo``, which has no ``--objects``, can run. A test checks them against their source."""


# Option-value types: every subcommand bounds its numeric options with these, so a value that cannot make sense
# (a negative seed, a zero batch, a side of a million pixels) is an argparse error (exit 2, one line naming the
# option) before any work starts.

SEED_RANGE = (0, 2**32 - 1)
"""Seeds: what ``numpy.random.default_rng`` and ``torch.manual_seed`` both take."""
SIDE_RANGE = (8, 8192)
"""Image and mask sides in pixels (8192² RGB is 200 MB per image; the paper uses 512 and 1024)."""
MASK_SIDE_RANGE = (16, SIDE_RANGE[1])
"""Sides of jobs that draw masks (masks, build, demo): the generators' smallest is 16
(:data:`misato.masks.presets.MIN_MASK_SIDE`; a test keeps the two equal)."""
COUNT_RANGE = (1, 10_000_000)
"""Numbers of images or masks a job makes."""
BATCH_RANGE = (1, 4096)
"""Images per forward pass."""
WORKER_RANGE = (0, 256)
"""DataLoader worker processes."""
BOOTSTRAP_RANGE = (0, 1_000_000)
"""Bootstrap resamples (beyond ~10⁵ the interval's Monte-Carlo error is far below the sampling error)."""


def int_in(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]``; anything else is refused naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its own messages
    return parse


def finite_float(text: str) -> float:
    """argparse type for float options: ``nan`` and ``inf`` are refused (they would reach run.json as invalid JSON)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


DEVICE_PATTERN = re.compile(r"(cpu|mps|(cuda|xpu)(:\d+)?)")


def device_name(text: str) -> str:
    """argparse type for ``--device``: ``cpu``, ``cuda``, ``cuda:N``, ``xpu[:N]`` or ``mps`` (whether that device is
    present here is checked when the command starts)."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, xpu or mps, got {text!r}")
    return text
