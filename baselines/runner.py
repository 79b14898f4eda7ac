"""Apply an inpainting method to every pair of a MISATO folder, resumably and, under ``torchrun``, sharded.

Writes ``OUT/<name>.png`` for each image (atomically, so any file present is complete) and ``OUT/run.json``
(method description, seed, limit, the data it read, provenance, timings, ``"complete": true|false``). The output
folder follows :mod:`misato.outputs`: ``resume=True`` continues a killed run, fills in outputs deleted from a
complete one and extends a ``limit`` trial run (to a larger limit or to every image) — in each case exactly the
missing images are computed; a run is never overwritten unless ``overwrite=True``, which deletes only what a run
writes.

A resumed run must read the data it was started on: ``run.json`` records the resolved image and mask folders and
a digest of the pair list (names, file names) and of every file's size and modification time
(:func:`data_fingerprint`); any difference is refused, naming what differs. A resume must also list every output
already in the folder: resuming with a smaller ``limit`` is refused, naming the outputs it would no longer list
(nothing is deleted; delete them or use ``overwrite``). A resume deletes the temporary files of writes a kill
cut short.

Sharding (:mod:`misato.distributed`): when the caller joined a process group of ``W`` ranks, rank 0 prepares the
folder and the list of missing images, rank ``r`` computes entries ``r::W`` of that list and writes their files,
and rank 0 writes the final ``run.json`` once every rank has finished. Outputs depend only on the run seed and
the file name, so a sharded run writes the same bytes as a single process, and a killed one resumes with any
number of ranks.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from baselines.base import InpaintingMethod, image_seed
from misato.distributed import all_gather_objects, barrier, broadcast_from_rank0, rank_and_world
from misato.errors import MisatoError
from misato.hashing import bytes_sha256
from misato.io import atomic_write_bytes, atomic_write_text, preview_names, read_image, read_mask
from misato.layout import PairedFolder, open_pairs
from misato.outputs import TEMPORARY_FILES, OutputPolicy, discard_refused_start, prepare_output
from misato.provenance import provenance
from misato.resources import available_cpus

RUN_FILE = "run.json"
RUN_POLICY = OutputPolicy(what="run", markers=(RUN_FILE,), owned=("*.png", RUN_FILE))
RUN_PACKAGES = ("diffusers", "opencv-python-headless", "opencv-python", "transformers")
"""Packages whose versions ``run.json`` records besides the base ones."""
IO_DEPTH = 8
"""Images read ahead of the method, and images computed but not yet written, at most (each)."""


def write_prediction(path: Path, image: np.ndarray) -> None:
    """Atomically write a prediction ``uint8 [H, W, 3]`` as 8-bit RGB PNG with OpenCV's encoder, zlib level 1 and
    its run-length strategy: lossless like :func:`misato.io.write_image` (the same pixels), files within a few per
    cent of Pillow's level 6, and three to five times faster on 512² photos (the bulk of a Telea run's time with
    Pillow). Nothing compares prediction files by their bytes; the evaluator reads pixels."""
    import cv2

    encoded, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                 [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not encoded:
        raise MisatoError(f"{path}: OpenCV could not encode the prediction as PNG")
    atomic_write_bytes(path, data.data)


def data_fingerprint(pairs: PairedFolder) -> dict[str, Any]:
    """What identifies the data a run read: the resolved image and mask folders, the number of pairs, a sha256 of
    the pair list (stem, image file name, mask file name) and a sha256 of every file's size and modification time.
    """
    listing = "\n".join(f"{n}\t{pairs.images[n].name}\t{pairs.masks[n].name}" for n in pairs.names)
    stats = []
    for name in pairs.names:
        for path in (pairs.images[name], pairs.masks[name]):
            stat = path.stat()
            stats.append(f"{stat.st_size}\t{stat.st_mtime_ns}")
    first = pairs.names[0]
    return {
        "image_folder": str(pairs.images[first].parent.resolve()),
        "mask_folder": str(pairs.masks[first].parent.resolve()),
        "n_pairs": len(pairs.names),
        "names_sha256": bytes_sha256(listing.encode()),
        "files_sha256": bytes_sha256("\n".join(stats).encode()),
    }


def _check_same_data(out: Path, previous: dict[str, Any], data: str, now: dict[str, Any]) -> None:
    """A resumed run must read the data it was started on (``data``: the resolved ``--data``; ``now``: its
    :func:`data_fingerprint`). Records of older versions, without a fingerprint, are checked by ``data`` alone."""
    before = previous.get("data_files", {})
    differences = [f"{what} is {now[key]} (the run read {before[key]})"
                   for key, what in (("image_folder", "the image folder"), ("mask_folder", "the mask folder"))
                   if key in before and before[key] != now[key]]
    if not before and previous.get("data", data) != data:
        differences.append(f"--data is {data} (the run read {previous['data']})")
    if not differences and "names_sha256" in before and before["names_sha256"] != now["names_sha256"]:
        differences.append(f"the image/mask names differ ({now['n_pairs']} pairs now, {before.get('n_pairs')} "
                           "in the run)")
    elif not differences and "files_sha256" in before and before["files_sha256"] != now["files_sha256"]:
        differences.append("the same names, but files of other sizes or modification times (the images or masks "
                           "were changed)")
    if differences:
        raise MisatoError(f"{out} holds a run of other data: {'; '.join(differences)}; resume with the data it was "
                          "started on, or choose another --out")


def _check_same_settings(out: Path, previous: dict[str, Any], method: InpaintingMethod, seed: int) -> None:
    """A resumed run must use the method, options and seed it was started with (the limit may change)."""
    now = {**method.describe(), "seed": seed}
    differing = sorted(key for key in now if previous.get(key) != now[key])
    if differing:
        raise MisatoError(f"{out} was started with other settings ({', '.join(differing)}); resume with the same "
                          "method and options, or choose another --out")


def _check_no_unlisted_outputs(out: Path, names: list[str], limit: int | None) -> None:
    """Refuse a resume whose list of images would not hold every output already in ``out``."""
    listed = set(names)
    unlisted = [path.stem for path in out.glob("*.png") if path.stem not in listed]
    if unlisted:
        raise MisatoError(f"{out} holds {len(unlisted)} output(s) this run (--limit {limit}) would not list: "
                          f"{preview_names(unlisted)}; resume with a larger --limit (or none), delete them, or "
                          "pass --overwrite")


def _prepare(method: InpaintingMethod, pairs: PairedFolder, out: Path, seed: int, resume: bool, overwrite: bool,
             limit: int | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """Check and prepare ``out`` (rank 0 only); ``(record, names of this run, names still to compute)``."""
    inputs = [pairs.images[pairs.names[0]].parent, pairs.masks[pairs.names[0]].parent]
    fingerprint = data_fingerprint(pairs)
    data = fingerprint["image_folder"] if pairs.root is None else str(pairs.root.resolve())
    previous = prepare_output(out, RUN_POLICY, resume=resume, overwrite=overwrite, inputs=inputs)
    names = pairs.names[:limit] if limit is not None else pairs.names
    if previous is not None:
        _check_same_settings(out, previous.record, method, seed)
        _check_same_data(out, previous.record, data, fingerprint)
        _check_no_unlisted_outputs(out, names, limit)
        for leftover in out.glob(TEMPORARY_FILES):  # a write cut short by a kill
            leftover.unlink()
    todo = [n for n in names if not (out / f"{n}.png").is_file()]
    record: dict[str, Any] = {
        **method.describe(),
        "data": data,
        "data_files": fingerprint,
        "seed": seed,
        "n_images": len(names),
        "limit": limit,
        "complete": False,
        "provenance": provenance(RUN_PACKAGES),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2))
    return record, names, todo


def _on_rank0(function, *args):
    """``function(*args)`` on rank 0, its result on every rank; an exception there stops every rank (rank 0
    re-raises it, the others raise a :class:`MisatoError` quoting it)."""
    rank, world = rank_and_world()
    if world == 1:
        return function(*args)
    result, problem = None, None
    if rank == 0:
        try:
            result = function(*args)
        except Exception as error:
            problem = error
    shared = broadcast_from_rank0((result, None if problem is None else str(problem)))
    if problem is not None:
        raise problem
    if shared[1] is not None:
        raise MisatoError(f"rank 0 stopped: {shared[1]}")
    return shared[0]


def _read_batch(pairs: PairedFolder, batch: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images and masks of ``batch``, each pair checked to be of one size."""
    images = [read_image(pairs.images[n]) for n in batch]
    masks = [read_mask(pairs.masks[n]) for n in batch]
    for name, image, hole in zip(batch, images, masks):
        if image.shape[:2] != hole.shape:
            raise MisatoError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
                              f"{hole.shape[1]}x{hole.shape[0]}")
    return images, masks


def _io_threads() -> int:
    """Threads for reading and writing: one per CPU this process may use besides the method's, 1 to 4. (On two
    free CPUs one thread beats two: a Telea run took 1.05 × the bare method with one, 1.10 × with two, whose
    file work competed with the method for its CPU.)"""
    return max(1, min(4, available_cpus() - 1))


def _inpaint_names(method: InpaintingMethod, pairs: PairedFolder, out: Path, names: list[str], seed: int,
                   batch_size: int, bar) -> None:
    """Compute and write ``OUT/<name>.png`` for ``names``, ``batch_size`` at a time.

    File work overlaps the method's: :func:`_io_threads` threads read the batches ahead and write the ones
    computed (decoding, encoding and file I/O release the GIL) while the method runs; about :data:`IO_DEPTH`
    images (at least one batch) are read ahead and as many wait to be written, so that the method waits for
    neither while the file work keeps pace on average. Every output is still written atomically, and an error
    stops the run after the outputs of the batches before it are written (reads not started are cancelled).
    """
    batches = [names[start : start + batch_size] for start in range(0, len(names), batch_size)]
    depth = max(1, IO_DEPTH // batch_size)
    with ThreadPoolExecutor(max_workers=_io_threads(), thread_name_prefix="misato-io") as pool:
        reading = deque(pool.submit(_read_batch, pairs, batch) for batch in batches[:depth])
        writing: deque = deque()
        try:
            for index, batch in enumerate(batches):
                images, masks = reading.popleft().result()
                if index + depth < len(batches):
                    reading.append(pool.submit(_read_batch, pairs, batches[index + depth]))
                results = _checked_results(method, out, batch, images,
                                           method.inpaint(images, masks, [image_seed(seed, n) for n in batch]))
                while len(writing) >= depth:
                    _finish(writing.popleft(), bar)
                writing.append([pool.submit(write_prediction, out / f"{name}.png", result)
                                for name, result in zip(batch, results)])
            while writing:
                _finish(writing.popleft(), bar)
        finally:
            for future in reading:
                future.cancel()


def _checked_results(method: InpaintingMethod, out: Path, batch: list[str], images: list[np.ndarray],
                     results) -> list[np.ndarray]:
    """``results`` as a list after checking it holds one ``uint8`` array of each input's shape per image."""
    results = list(results)
    if len(results) != len(batch):
        raise MisatoError(f"method {method.name} returned {len(results)} images for a batch of "
                          f"{len(batch)} ({batch[0]}…); finished outputs in {out} are kept")
    for name, image, result in zip(batch, images, results):
        if not isinstance(result, np.ndarray) or result.shape != image.shape or result.dtype != np.uint8:
            found = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
            raise MisatoError(f"method {method.name} returned {found} for {name}, expected uint8 "
                              f"{image.shape}; finished outputs in {out} are kept")
    return results


def _finish(writing: list, bar) -> None:
    """Wait for the writes of one batch (re-raising their error) and count them on the progress bar."""
    for future in writing:
        future.result()
    bar.update(len(writing))


def _inpaint_shards(method: InpaintingMethod, pairs: PairedFolder, out: Path, names: list[str], todo: list[str],
                    mine: list[str], seed: int, batch_size: int, progress: bool) -> list[tuple[int, None]]:
    """Inpaint this rank's share ``mine`` of ``todo``; ``[(images computed, None)]`` per rank once every rank is
    done. A failure on any rank is raised on every rank (finished outputs are kept)."""
    rank, world = rank_and_world()
    problem = None
    with tqdm(total=len(names), initial=len(names) - len(todo), desc=method.name,
              disable=not progress or rank != 0) as bar:
        try:
            _inpaint_names(method, pairs, out, mine, seed, batch_size, bar)
        except Exception as error:
            if world == 1:
                raise
            problem = error
    outcomes = all_gather_objects((len(mine), None if problem is None else str(problem)))  # all ranks done here
    if problem is not None:
        raise problem
    failed = [(index, message) for index, (_, message) in enumerate(outcomes) if message is not None]
    if failed:
        raise MisatoError(f"rank {failed[0][0]} stopped: {failed[0][1]}")
    return outcomes


def run_method(
    method: InpaintingMethod,
    data: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    mask: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    limit: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Inpaint every image of ``data`` (a MISATO root, or an image folder with ``mask``) into ``out``.

    Called on every rank of a process group, it shards the work (module docstring); alone, it does it all.

    Args:
        limit: only the first ``limit`` images (sorted names), e.g. a trial run; resuming with a larger limit or
            none computes the rest (a smaller one is refused).
        resume: continue / complete / extend the run in ``out`` (see the module docstring).
        overwrite: replace the run in ``out`` (only its ``.png`` files and ``run.json`` are deleted).
        batch_size: images handed to the method at once; None: the method's own ``batch_size`` (1 unless it says).
    Returns:
        The run record written to ``OUT/run.json`` (the same on every rank); ``computed`` is how many images
        this session inpainted (all ranks together).
    Raises:
        MisatoError: bad ``limit``, ``out`` inside an input, a folder holding something else, a run there without
        ``resume``/``overwrite``, a resumed run started with other settings or data or listing fewer images, or a
        method failing on any rank (the finished outputs are kept; when there are none, run.json goes too).
    """
    pairs = open_pairs(data, mask)
    out = Path(out)
    if limit is not None and limit < 1:
        raise MisatoError(f"--limit must be at least 1, got {limit}")
    batch_size = getattr(method, "batch_size", 1) if batch_size is None else batch_size
    if batch_size < 1:
        raise MisatoError(f"--batch-size must be at least 1, got {batch_size}")
    rank, world = rank_and_world()
    out_existed = out.exists()
    record, names, todo = _on_rank0(_prepare, method, pairs, out, seed, resume, overwrite, limit)
    mine = todo[rank::world]
    started = time.perf_counter()
    try:
        outcomes = _inpaint_shards(method, pairs, out, names, todo, mine, seed, batch_size, progress)
    except MisatoError:
        if rank == 0 and not any(out.glob("*.png")):  # no prediction written: nothing to resume
            discard_refused_start(out, out / RUN_FILE, made_here=not out_existed)
        raise
    record.update(complete=True, computed=len(todo), seconds_last_session=round(time.perf_counter() - started, 3))
    if world > 1:
        record.update(world_size=world, computed_per_rank=[count for count, _ in outcomes])
    if rank == 0:
        atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2))
    barrier()  # no rank returns before run.json says complete
    return record
