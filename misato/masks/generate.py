"""Write ``n`` masks of a preset to a folder: ``NNNNN.png`` (255 = hole), ``masks.csv`` and ``masks.json``.

Mask ``i`` is drawn from ``np.random.default_rng(np.random.SeedSequence([seed, i]))``, so every file depends
only on (preset, size, ratio range, object source, seed, i) — not on ``n``, resume points or order — and the
same seed gives bit-identical files.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from misato.errors import MisatoError
from misato.io import atomic_write_text, read_mask, write_mask
from misato.masks.base import hole_ratio
from misato.masks.presets import make_generator
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance
from misato.resources import check_memory

CSV_NAME = "masks.csv"
PARAMS_NAME = "masks.json"
CSV_COLUMNS = ("name", "kinds", "hole_ratio", "seed", "index")
KIND_SEPARATOR = "+"
BYTES_PER_PIXEL = 16
"""Peak memory of drawing and encoding one mask, per pixel of ``size²`` (measured: 4–11 bytes over the presets at
sides 1024–4096), for :func:`misato.resources.check_memory`."""
MASKS_POLICY = OutputPolicy(what="mask set", markers=(PARAMS_NAME,),
                            owned=("[0-9][0-9][0-9][0-9][0-9]*.png", CSV_NAME, PARAMS_NAME))


def mask_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for mask ``index`` of a run with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def mask_name(index: int, n: int) -> str:
    """File stem of mask ``index``: zero-padded to 5 digits (more when ``n`` needs them)."""
    return f"{index:0{max(5, len(str(n - 1)))}d}"


def _check_same_run(out: Path, previous: dict, run: dict) -> None:
    differing = [key for key in ("preset", "size", "seed", "generator") if previous.get(key) != run[key]]
    if differing:
        raise MisatoError(f"{out}: cannot resume, it was generated with different {', '.join(differing)}; use --overwrite")


def _remove_unlisted(out: Path, previous_n, n: int) -> None:
    """Delete the masks the previous record (``previous_n`` masks) listed that a run of ``n`` masks does not: a
    resume with a smaller N (or another name width) leaves exactly the files of the new record. Nothing else is
    touched: only file names this run's own naming gives for an index below ``previous_n``."""
    if not isinstance(previous_n, int) or isinstance(previous_n, bool):
        return
    for path in out.glob(MASKS_POLICY.owned[0]):
        if not path.stem.isdigit():
            continue
        index = int(path.stem)
        was_listed = index < previous_n and path.stem == mask_name(index, previous_n)
        if was_listed and not (index < n and path.stem == mask_name(index, n)):
            path.unlink()


def generate_masks(preset: str, n: int, size: int, seed: int, out: str | os.PathLike,
                   ratio_range: tuple[float, float] | None = None, objects: str | os.PathLike | None = None,
                   resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Generate masks ``0 … n−1`` of ``preset`` into ``out``; returns the path of ``masks.csv``.

    On resume, files already present are not re-encoded; each is checked against the mask its (seed, index)
    generates, so a folder made with other settings is reported instead of silently mixed. Masks the previous
    record listed beyond the new ``n`` are deleted (the folder then holds exactly what ``masks.csv`` lists), and
    hidden temporary files of a killed write are removed (:func:`misato.outputs.prepare_output`).
    Raises:
        MisatoError: bad preset/size/range/objects, ``n < 1``, non-empty ``out`` without resume/overwrite,
        or a resumed folder made with other settings.
    """
    from tqdm import tqdm

    if int(n) < 1:
        raise MisatoError(f"--n must be at least 1, got {n}")
    check_memory(BYTES_PER_PIXEL * int(size) ** 2, f"--size {size} masks")
    generator = make_generator(preset, size, ratio_range, objects)
    out = Path(out)
    run = {"preset": preset, "size": int(size), "seed": int(seed), "generator": generator.parameters()}
    previous = prepare_output(out, MASKS_POLICY, resume=resume, inputs=[objects] if objects is not None else [],
                              overwrite=overwrite)
    if previous is not None:
        _check_same_run(out, previous.record, run)
        _remove_unlisted(out, previous.record.get("n"), int(n))
    out.mkdir(parents=True, exist_ok=True)
    record = {**run, "n": int(n), "complete": False, "provenance": provenance()}
    atomic_write_text(out / PARAMS_NAME, json.dumps(record, indent=2))
    rows = []
    for index in tqdm(range(int(n)), desc=f"masks {preset}", unit="mask", disable=not progress):
        name = mask_name(index, int(n))
        mask, kinds = generator.sample(mask_rng(int(seed), index))
        path = out / f"{name}.png"
        if path.is_file():
            if not np.array_equal(read_mask(path), mask):
                raise MisatoError(f"{path} differs from the mask this seed and index generate; "
                                  "the folder holds another run — use --overwrite")
        else:
            write_mask(path, mask)
        rows.append((name, KIND_SEPARATOR.join(kinds), f"{hole_ratio(mask):.6f}", int(seed), index))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out / CSV_NAME, buffer.getvalue())
    atomic_write_text(out / PARAMS_NAME, json.dumps({**record, "complete": True}, indent=2))
    return out / CSV_NAME
