"""Apply an inpainting method to every pair of a MISATO folder, resumably.

Writes ``OUT/<name>.png`` for each image (atomically, so any file present is complete) and ``OUT/run.json``
(method description, seed, versions, timings, ``"complete": true|false``). A killed run continues with
``resume=True``; a complete run is never overwritten unless ``overwrite=True``.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from baselines.base import InpaintingMethod, image_seed
from misato import __version__
from misato.errors import MisatoError
from misato.io import atomic_write_text, check_output_location, read_image, read_mask, write_image
from misato.layout import open_pairs

RUN_FILE = "run.json"


def _read_record(out: Path) -> dict[str, Any] | None:
    """The run record in ``out``, None when there is none; a damaged one is an error (never silently replaced)."""
    record_path = out / RUN_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise MisatoError(f"{record_path} is damaged ({error}); move the folder aside or choose another --out") from None
    if not isinstance(record, dict):
        raise MisatoError(f"{record_path} is not a run record; move the folder aside or choose another --out")
    return record


def _prepare_output(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Validate the output folder state; returns the previous run record when resuming."""
    previous = _read_record(out)
    if previous is not None and previous.get("complete") and not overwrite:
        raise MisatoError(f"{out} holds a complete run; pass --overwrite to replace it or choose another folder")
    if overwrite and out.exists() and any(out.iterdir()):
        if previous is None:  # only ever delete what a run wrote
            raise MisatoError(f"{out} is not empty and holds no {RUN_FILE}: --overwrite only replaces a run folder")
        shutil.rmtree(out)
        return None
    if out.exists() and any(out.iterdir()) and not resume:
        raise MisatoError(f"{out} is not empty; pass --resume to continue a stopped run or --overwrite to replace it")
    return previous if resume else None


def run_method(
    method: InpaintingMethod,
    data: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    mask: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    limit: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Inpaint every image of ``data`` (a MISATO root, or an image folder with ``mask``) into ``out``.

    Returns:
        The run record written to ``OUT/run.json``.
    """
    pairs = open_pairs(data, mask)
    out = Path(out)
    inputs = [pairs.images[pairs.names[0]].parent, pairs.masks[pairs.names[0]].parent]
    check_output_location(out, inputs)
    if limit is not None and limit < 1:
        raise MisatoError(f"--limit must be at least 1, got {limit}")
    previous = _prepare_output(out, resume, overwrite)
    if previous is not None:
        started_with = {key: previous.get(key) for key in (*method.describe(), "seed")}
        now = {**method.describe(), "seed": seed}
        differing = sorted(key for key in now if started_with.get(key) != now[key])
        if differing:
            raise MisatoError(f"{out} was started with other settings ({', '.join(differing)}); resume with the same "
                              "method and options, or choose another --out")
    names = pairs.names[:limit] if limit is not None else pairs.names
    todo = [n for n in names if not (out / f"{n}.png").is_file()]
    record: dict[str, Any] = {
        **method.describe(),
        "data": str(Path(data).resolve()),
        "seed": seed,
        "n_images": len(names),
        "limit": limit,
        "complete": False,
        "misato_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2))
    started = time.perf_counter()
    with tqdm(total=len(names), initial=len(names) - len(todo), desc=method.name, disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images = [read_image(pairs.images[n]) for n in batch]
            masks = [read_mask(pairs.masks[n]) for n in batch]
            for name, image, hole in zip(batch, images, masks):
                if image.shape[:2] != hole.shape:
                    raise MisatoError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
                                      f"{hole.shape[1]}x{hole.shape[0]}")
            results = method.inpaint(images, masks, [image_seed(seed, n) for n in batch])
            for name, image, result in zip(batch, images, results):
                if result.shape != image.shape or result.dtype != np.uint8:
                    raise RuntimeError(f"{method.name} returned {result.dtype} {result.shape} for {name}, "
                                       f"expected uint8 {image.shape}")
                write_image(out / f"{name}.png", result)
            bar.update(len(batch))
    record.update(complete=True, seconds_last_session=round(time.perf_counter() - started, 3))
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2))
    return record
