"""Small synthetic data shared by the tests (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from misato.io import write_image, write_mask


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A natural-ish RGB ``uint8 [size, size, 3]`` image: random low-frequency colour plus a little noise."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3))
    ys = np.linspace(0, 3, size)
    xs = np.linspace(0, 3, size)
    y0 = np.clip(ys.astype(int), 0, 2)
    x0 = np.clip(xs.astype(int), 0, 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    image = top * (1 - fy) + bottom * fy + rng.normal(0, 6, size=(size, size, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def box_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A boolean ``[size, size]`` mask with one random rectangle hole covering roughly 5–30%."""
    mask = np.zeros((size, size), bool)
    h, w = rng.integers(size // 5, size // 2, size=2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    mask[y : y + h, x : x + w] = True
    return mask


def write_misato_folder(root: Path, n: int = 4, size: int = 64, seed: int = 0, names: list[str] | None = None) -> Path:
    """Write a MISATO-layout folder ``root/image``, ``root/mask`` with ``n`` synthetic pairs."""
    rng = np.random.default_rng(seed)
    names = names or [f"{i:04d}" for i in range(n)]
    for name in names:
        write_image(root / "image" / f"{name}.png", smooth_image(rng, size))
        write_mask(root / "mask" / f"{name}.png", box_mask(rng, size))
    return root


def write_predictions(gt_root: Path, out: Path, seed: int = 1, noise: float = 20.0) -> Path:
    """Write fake predictions: the ground truth plus Gaussian noise (``uint8`` PNGs, same stems)."""
    from misato.io import list_images, read_image

    rng = np.random.default_rng(seed)
    for name, path in list_images(gt_root / "image").items():
        image = read_image(path).astype(np.float64)
        image = image + rng.normal(0, noise, size=image.shape)
        write_image(out / f"{name}.png", np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return out


TRIPWIRE: list = []
"""Grows whenever unpickling :class:`HyperParameters` runs code (it must stay empty)."""


def _tripwire(value):
    TRIPWIRE.append(value)
    return value


class HyperParameters:
    """Stands for the omegaconf config Lightning pickles into ``hyper_parameters``: unpickling it runs code."""

    def __reduce__(self):
        return _tripwire, ("unpickling ran code",)


TRIPWIRE_CLASS = f"{__name__}._tripwire"
"""The class name a restricted unpickler reports refusing for :class:`HyperParameters`."""


def save_lightning_checkpoint(path: Path, state: dict, **fields) -> Path:
    """A PyTorch-Lightning ``best.ckpt`` layout: ``state`` under ``state_dict``, a ``hyper_parameters`` object
    whose unpickling would run code (:data:`TRIPWIRE`), and the training bookkeeping (``fields`` override it)."""
    import torch

    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.6.0", "state_dict": state,
                "callbacks": {}, "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": HyperParameters(),
                **fields}, path)
    return path


def assert_fills_the_hole(out: np.ndarray, image: np.ndarray, hole: np.ndarray) -> None:
    """``out`` is a ``uint8`` image of ``image``'s shape whose known pixels are ``image``'s bit for bit and whose
    hole pixels mostly (over half) differ from the input's (the network filled them)."""
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] != image[hole]).mean() > 0.5


def release_mae_example(size: int = 128, mae_size: int = 64, seed: int = 1):
    """An image and a hole whose edges are off the resize grid, in the pipelines' input form
    (``image [1, 3, size, size]`` in [0, 1], ``mask [1, 1, size, size]``), and the MAE input the ASUKA release
    makes of them, computed independently with cv2 (area on uint8, nearest mask, hole ≥ 0.5)."""
    import cv2
    import torch

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    hole = np.zeros((size, size), np.float32)
    hole[13:77, 37:101] = 1  # edges off the 2-pixel grid: nearest and "any hole" disagree there
    small = cv2.resize(pixels, (mae_size, mae_size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    small_hole = (cv2.resize(hole, (mae_size, mae_size), interpolation=cv2.INTER_NEAREST) >= 0.5).astype(np.float32)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    mask = torch.from_numpy(hole)[None, None]
    return image, mask, torch.from_numpy(small).permute(2, 0, 1)[None], torch.from_numpy(small_hole)[None, None]
