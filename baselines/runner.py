"""Apply an inpainting method to every pair of a MISATO folder, resumably.

Writes ``OUT/<name>.png`` for each image (atomically, so any file present is complete) and ``OUT/run.json``
(method description, seed, limit, provenance, timings, ``"complete": true|false``). The output folder follows
:mod:`misato.outputs`: ``resume=True`` continues a killed run, fills in outputs deleted from a complete one and
extends a ``limit`` trial run (to a larger limit or to every image) — in each case exactly the missing images
are computed; a run is never overwritten unless ``overwrite=True``, which deletes only what a run writes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from baselines.base import InpaintingMethod, image_seed
from misato.errors import MisatoError
from misato.io import atomic_write_text, read_image, read_mask, write_image
from misato.layout import open_pairs
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance

RUN_FILE = "run.json"
RUN_POLICY = OutputPolicy(what="run", markers=(RUN_FILE,), owned=("*.png", RUN_FILE))
RUN_PACKAGES = ("diffusers", "opencv-python-headless", "opencv-python", "transformers")
"""Packages whose versions ``run.json`` records besides the base ones."""


def _check_same_settings(out: Path, previous: dict[str, Any], method: InpaintingMethod, seed: int) -> None:
    """A resumed run must use the method, options and seed it was started with (the limit may change)."""
    now = {**method.describe(), "seed": seed}
    differing = sorted(key for key in now if previous.get(key) != now[key])
    if differing:
        raise MisatoError(f"{out} was started with other settings ({', '.join(differing)}); resume with the same "
                          "method and options, or choose another --out")


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

    Args:
        limit: only the first ``limit`` images (sorted names), e.g. a trial run; resuming with a larger limit or
            none computes the rest.
        resume: continue / complete / extend the run in ``out`` (see the module docstring).
        overwrite: replace the run in ``out`` (only its ``.png`` files and ``run.json`` are deleted).
    Returns:
        The run record written to ``OUT/run.json``; ``computed`` is how many images this session inpainted.
    Raises:
        MisatoError: bad ``limit``, ``out`` inside an input, a folder holding something else, a run there without
        ``resume``/``overwrite``, or a resumed run started with other settings.
    """
    pairs = open_pairs(data, mask)
    out = Path(out)
    if limit is not None and limit < 1:
        raise MisatoError(f"--limit must be at least 1, got {limit}")
    inputs = [pairs.images[pairs.names[0]].parent, pairs.masks[pairs.names[0]].parent]
    previous = prepare_output(out, RUN_POLICY, resume=resume, overwrite=overwrite, inputs=inputs)
    if previous is not None:
        _check_same_settings(out, previous.record, method, seed)
    names = pairs.names[:limit] if limit is not None else pairs.names
    todo = [n for n in names if not (out / f"{n}.png").is_file()]
    record: dict[str, Any] = {
        **method.describe(),
        "data": str(Path(data).resolve()),
        "seed": seed,
        "n_images": len(names),
        "limit": limit,
        "complete": False,
        "provenance": provenance(RUN_PACKAGES),
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
            results = list(method.inpaint(images, masks, [image_seed(seed, n) for n in batch]))
            if len(results) != len(batch):
                raise MisatoError(f"method {method.name} returned {len(results)} images for a batch of {len(batch)} "
                                  f"({batch[0]}…); finished outputs in {out} are kept")
            for name, image, result in zip(batch, images, results):
                if not isinstance(result, np.ndarray) or result.shape != image.shape or result.dtype != np.uint8:
                    found = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
                    raise MisatoError(f"method {method.name} returned {found} for {name}, expected uint8 "
                                      f"{image.shape}; finished outputs in {out} are kept")
                write_image(out / f"{name}.png", result)
            bar.update(len(batch))
    record.update(complete=True, computed=len(todo), seconds_last_session=round(time.perf_counter() - started, 3))
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2))
    return record
