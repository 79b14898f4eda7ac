"""Shared tiny training inputs: synthetic images (nested like Places2), object masks, a tiny MAE-FAR checkpoint and
a tiny SD-inpainting folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asuka.models import MAEPrior
from asuka.testing import TINY_MAE, write_dummy_sd_inpaint_folder
from misato.io import write_image, write_mask
from misato.reproducibility import seeded
from tests.helpers import box_mask, smooth_image


def write_images(root: Path, n: int = 6, size: int = 72, seed: int = 0) -> Path:
    """``n`` smooth images under ``root/a/<class>/`` (Places2-style nesting), some not square."""
    rng = np.random.default_rng(seed)
    for index in range(n):
        image = smooth_image(rng, size)
        if index % 2:
            image = image[:, : size - 6]
        write_image(root / "a" / f"class{index % 2}" / f"{index:08d}.png", image)
    return root


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory):
    """``{"images", "objects", "mae", "sd"}`` paths."""
    root = tmp_path_factory.mktemp("train-inputs")
    images = write_images(root / "images")
    rng = np.random.default_rng(3)
    for index in range(4):
        write_mask(root / "objects" / f"{index}.png", box_mask(rng, 64))
    with seeded(7):
        mae = MAEPrior(**TINY_MAE)
    torch.save({"model": mae.state_dict()}, root / "mae_300.pth")
    sd = write_dummy_sd_inpaint_folder(root / "sd")
    return {"images": images, "objects": root / "objects", "mae": root / "mae_300.pth", "sd": sd, "root": root}


def common_flags(inputs, out: Path, steps: int = 3, batch: int = 2, **extra) -> list[str]:
    """Flags of a tiny CPU run at 64 px (no workers, no progress bar)."""
    flags = {"data": inputs["images"], "out": out, "objects": inputs["objects"], "resolution": 64,
             "batch-size": batch, "max-steps": steps, "num-workers": 0, "checkpoint-every": 100, "log-every": 1,
             "validate-every": 0, "val-samples": 2, **extra}
    argv = []
    for key, value in flags.items():
        argv += [f"--{key}"] + ([str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)])
    return argv + ["--no-progress"]
