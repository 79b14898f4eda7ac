"""``build``: raw datasets → CLIP features → BisectingKMeans representatives → crop/resize → masks → MISATO folder.

Output (the released layout): ``OUT/image/NNNN.png``, ``OUT/mask/NNNN.png`` (255 = hole), ``OUT/manifest.csv``,
``OUT/build.json``. Domains occupy consecutive index blocks of ``per_domain`` images in the order landscape,
indoor, building, background, then custom ``--domain`` entries in the order given (a domain that is not given
takes no block). Within a block images follow the sorted source paths of the chosen members.

Resumability: while running, ``OUT/.misato-build/`` holds the settings, the selection plan and one record per
written image. A killed build continues with ``resume=True``; because every image's mask generator is seeded
from ``(seed, index)`` alone and the plan is stored, the result is byte-identical to an uninterrupted build.
The plan records each selected file's sha256 and :meth:`~misato.build.readers.SourceImage.fingerprint`; a resume
first checks every selected file against them (re-hashing only files whose fingerprint moved) and refuses when one
was changed, and every write checks the bytes it crops against the sha256, so no output mixes two versions of the
raw data. ``overwrite=True`` deletes what a build wrote (:data:`BUILD_POLICY`) and starts afresh.
The state folder is removed once ``manifest.csv`` and ``build.json`` are written.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from misato.build import coco as coco_masks
from misato.build.crop import crop_resize_image, crop_resize_mask
from misato.build.features import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    ClipEncoder,
    extract_features,
    load_clip,
)
from misato.build.readers import (
    SourceImage,
    read_coco,
    read_flickr_landscape,
    read_image_folder,
    read_matterport,
    read_megadepth,
)
from misato.build.selection import select_representatives
from misato.distributed import barrier, broadcast_from_rank0, local_device, rank_and_world
from misato.errors import MisatoError
from misato.hashing import bytes_sha256, file_sha256, misato_cache_dir
from misato.io import atomic_write_text, binarize_mask, decode_mask_uint8, list_images, write_image, write_mask
from misato.layout import DOMAINS, MANIFEST_NAME
from misato.outputs import OutputPolicy, discard_refused_start, prepare_output
from misato.provenance import provenance
from misato.resources import check_memory
from misato.masks.base import check_ratio_range
from misato.masks.generate import BYTES_PER_PIXEL as MASK_BYTES_PER_PIXEL, mask_rng

STATE_DIR = ".misato-build"
BUILD_JSON = "build.json"
WRITE_BYTES_PER_PIXEL = 2 * MASK_BYTES_PER_PIXEL
"""Peak memory of writing one image, per output pixel: its mask (:data:`misato.masks.generate.BYTES_PER_PIXEL`)
plus the cropped, resized and encoded RGB copies, counted as much again (the raw file's own decode comes on top)."""
OUTPUT_NAMES = "[0-9][0-9][0-9][0-9]*.png"
"""Pattern of the image and mask files a build writes (``NNNN.png``, zero-padded index)."""
BUILD_POLICY = OutputPolicy(what="build", markers=(BUILD_JSON, f"{STATE_DIR}/settings.json"),
                            owned=(f"image/{OUTPUT_NAMES}", f"mask/{OUTPUT_NAMES}", MANIFEST_NAME, BUILD_JSON, STATE_DIR))
"""``overwrite`` deletes only these: other files a user keeps in the folder (or in ``image/``, ``mask/``) stay."""
BUILD_PACKAGES = ("open_clip_torch", "pycocotools", "scikit-learn")
"""Packages whose versions ``build.json`` records besides the base ones (:mod:`misato.provenance`)."""
MANIFEST_COLUMNS = (
    "name",
    "index",
    "domain",
    "source_dataset",
    "source_path",
    "cluster_id",
    "cluster_size",
    "distance_to_centre",
    "candidate_rank",
    "mask_kinds",
    "hole_ratio",
    "seed",
    "source_sha256",
)
STANDARD_NAMES = tuple(domain.name for domain in DOMAINS)


@dataclass
class DomainSource:
    """The raw images of one domain.

    Attributes:
        name: the domain (``landscape``, …, or a custom name).
        items: the images, sorted by relative path.
        coco: loaded COCO annotations (background domain only): holes avoid their objects.
    """

    name: str
    items: list[SourceImage]
    coco: object | None = None


@dataclass
class BuildReport:
    """What :func:`build` did: the output folder, images per domain and the skipped files."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    already_complete: bool = False


def collect_sources(
    flickr_landscape: str | os.PathLike | None = None,
    matterport: str | os.PathLike | None = None,
    megadepth: str | os.PathLike | None = None,
    coco_images: str | os.PathLike | None = None,
    coco_annotations: str | os.PathLike | None = None,
    domains: Sequence[tuple[str, str | os.PathLike]] = (),
) -> tuple[list[DomainSource], list[str]]:
    """Scan the given raw datasets, in the MISATO domain order, then the custom domains.

    Returns:
        ``(sources, unannotated)``: one :class:`DomainSource` per given dataset, and COCO image files the
        annotation file does not list.
    Raises:
        MisatoError: missing/empty folders, COCO images without annotations (or vice versa), bad domain names.
    """
    if (coco_images is None) != (coco_annotations is None):
        raise MisatoError("--coco-images and --coco-annotations go together: pass both or neither")
    sources: list[DomainSource] = []
    unannotated: list[str] = []
    if flickr_landscape is not None:
        sources.append(DomainSource("landscape", read_flickr_landscape(flickr_landscape)))
    if matterport is not None:
        sources.append(DomainSource("indoor", read_matterport(matterport)))
    if megadepth is not None:
        sources.append(DomainSource("building", read_megadepth(megadepth)))
    if coco_images is not None:
        coco = coco_masks.load_coco(coco_annotations)
        items, unannotated = read_coco(coco_images, coco)
        sources.append(DomainSource("background", items, coco))
    seen = {source.name for source in sources}
    for name, folder in domains:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise MisatoError(f"--domain {name}={folder}: a domain name is letters, digits, '-' or '_'")
        if name in STANDARD_NAMES or name in seen:
            raise MisatoError(
                f"--domain {name}: the name is taken (standard domains come from their own options: "
                "--flickr-landscape, --matterport, --megadepth, --coco-images)"
            )
        seen.add(name)
        sources.append(DomainSource(name, read_image_folder(folder, source_dataset=name)))
    if not sources:
        raise MisatoError(
            "no raw dataset given: pass at least one of --flickr-landscape, --matterport, --megadepth, "
            "--coco-images/--coco-annotations or --domain NAME=DIR"
        )
    return sources, unannotated


def default_mask_generator(size: int, ratio_range: tuple[float, float] | None, objects=None):
    """The MISATO mask mixture from :mod:`misato.masks` (``make_generator("misato", …)``).

    ``objects`` is handed to the generator as its object-shape source; :func:`build` passes the COCO
    annotation file when one is given and nothing else is (see docs/build.md).
    """
    from misato.masks import make_generator

    return make_generator("misato", size, ratio_range=ratio_range, objects=objects)


def check_object_masks(objects: str | os.PathLike, progress: bool = True) -> str:
    """Read every mask of an object-mask folder (``--mask-objects DIR``) before anything is written, and identify
    the object source by content.

    The generator may draw any file of the folder for any image, so a bad one would otherwise stop a build part-way
    through (or, with few images, never show). A COCO JSON source is checked when the generator loads it.

    Returns:
        sha256 over the folder's ``name\tsha256 of its bytes`` lines in name order (of a COCO JSON: the file's
        sha256). Recorded in the build's settings, so a resume refuses object masks edited in place.
    Raises:
        MisatoError: naming the first unreadable mask (corrupt, 16-bit, 0/1-valued, colour) or a folder whose masks
        are all empty.
    """
    folder = Path(objects)
    if not folder.is_dir():
        return file_sha256(folder)
    files = sorted(list_images(folder, what="object mask").values())
    digest, any_object = hashlib.sha256(), False
    for path in tqdm(files, desc="checking object masks", unit="mask", disable=not progress):
        data = path.read_bytes()  # read once: decoded and hashed
        any_object = binarize_mask(decode_mask_uint8(data, str(path))).any() or any_object
        digest.update(f"{path.name}\t{bytes_sha256(data)}\n".encode())
    if not any_object:
        raise MisatoError(f"--mask-objects {folder}: all {len(files)} object masks are empty (no pixel >= 128)")
    return digest.hexdigest()


def _describe_generator(generator) -> object:
    """The generator's parameters (``MaskGenerator.parameters()``), or its class name for custom generators."""
    parameters = getattr(generator, "parameters", None)
    if callable(parameters):
        return parameters()
    return f"{type(generator).__module__}.{type(generator).__qualname__}"


def _state_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _plan(sources: list[DomainSource], features, per_domain: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Selection for every domain → (plan entries in output order, skipped files)."""
    entries, skipped = [], []
    for source, result in zip(sources, features):
        for position, reason in result.problems.items():
            item = source.items[position]
            skipped.append({"domain": source.name, "source_dataset": item.source_dataset, "path": item.relative_path, "reason": reason})
        usable = result.usable
        chosen = select_representatives(result.features[usable], per_domain, seed, source.name)
        for representative in chosen:
            candidates = [int(usable[p]) for p in representative.candidates]
            if source.coco is None:
                candidates = candidates[:1]
            entries.append(
                {
                    "domain": source.name,
                    "candidates": [source.items[p].relative_path for p in candidates],
                    "hashes": [result.hashes[p] for p in candidates],
                    "fingerprints": [source.items[p].fingerprint() for p in candidates],
                    "cluster_id": representative.cluster_id,
                    "cluster_size": representative.cluster_size,
                    "distance_to_centre": representative.distance_to_centre,
                }
            )
    for index, entry in enumerate(entries):
        entry["index"] = index
    return entries, skipped


def _changed_source(item: SourceImage, out: Path) -> MisatoError:
    return MisatoError(f"{item.root / item.relative_path}: changed since the build in {out} selected it (its sha256 "
                       "differs from the one recorded); start again with --overwrite, or put the original file back")


def _check_sources_unchanged(entries: list[dict], by_path: dict[str, dict[str, SourceImage]], out: Path) -> None:
    """Refuse to resume a plan whose selected raw files were removed or rewritten since it was made.

    Every candidate of every entry is checked, written or not: its fingerprint is compared with the recorded one,
    and only when that moved is the file re-hashed and compared with the recorded sha256 (a copied or touched file
    with the same bytes passes).

    Raises:
        MisatoError: naming the first missing or changed file.
    """
    for entry in entries:
        items = by_path[entry["domain"]]
        fingerprints = entry.get("fingerprints", [None] * len(entry["candidates"]))  # older plans: re-hash all
        for relative, digest, fingerprint in zip(entry["candidates"], entry["hashes"], fingerprints):
            item = items.get(relative)
            if item is None:
                raise MisatoError(f"{entry['domain']}: {relative} was selected by the build in {out} but is no longer in "
                                  "the raw dataset; start again with --overwrite")
            if item.fingerprint() != fingerprint and bytes_sha256(item.read_bytes()) != digest:
                raise _changed_source(item, out)


def _write_one(
    entry: dict, source: DomainSource, by_path: dict[str, SourceImage], size: int, seed: int, generator, min_ratio: float, out: Path
) -> dict:
    """Write image and mask ``entry["index"]``; returns its manifest row (``by_path``: the domain's items by path).

    Raises:
        MisatoError: a candidate's bytes differ from the sha256 the plan recorded (the file changed during the build).
    """
    rng = mask_rng(seed, entry["index"])
    name = f"{entry['index']:04d}"
    failures = []
    for rank, relative in enumerate(entry["candidates"]):
        item = by_path[relative]
        data = item.read_bytes()
        if bytes_sha256(data) != entry["hashes"][rank]:
            raise _changed_source(item, out)
        image = crop_resize_image(item.decode(data), size)
        if source.coco is None:
            mask, kinds = generator.sample(rng)
            mask = np.asarray(mask, dtype=bool)
        else:
            foreground = crop_resize_mask(coco_masks.foreground_mask(source.coco, item.coco_image_id), size)
            try:
                mask, kinds = coco_masks.background_mask(generator, rng, foreground, min_ratio)
            except MisatoError as error:
                failures.append(f"{relative}: {error}")
                continue
        if mask.shape != (size, size):
            raise MisatoError(f"the mask generator returned shape {mask.shape}, expected ({size}, {size})")
        write_image(out / "image" / f"{name}.png", image)
        write_mask(out / "mask" / f"{name}.png", mask)
        return {
            "name": name,
            "index": entry["index"],
            "domain": source.name,
            "source_dataset": item.source_dataset,
            "source_path": relative,
            "cluster_id": entry["cluster_id"],
            "cluster_size": entry["cluster_size"],
            "distance_to_centre": f"{entry['distance_to_centre']:.6f}",
            "candidate_rank": rank,
            "mask_kinds": "+".join(kinds),
            "hole_ratio": f"{mask.mean():.6f}",
            "seed": seed,
            "source_sha256": entry["hashes"][rank],
        }
    raise MisatoError(f"{source.name} image {name}: no cluster member admits a background mask: " + "; ".join(failures[:3]))


def _manifest_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _build_record(
    arguments: dict, encoder_info: dict, generator, rows: list[dict], sources: list[DomainSource], skipped: list[dict],
    unannotated: list[str],
) -> dict:
    """The content of ``build.json`` (no timestamps or output path, so equal builds give equal files)."""
    names = [source.name for source in sources]
    indices = {name: [row["index"] for row in rows if row["domain"] == name] for name in names}
    return {
        "arguments": arguments,
        "provenance": provenance(BUILD_PACKAGES),
        "clip": encoder_info,
        "mask_generator": _describe_generator(generator),
        "index_ranges": {name: [min(found), max(found)] for name, found in indices.items() if found},
        "counts": {
            source.name: {
                "found": len(source.items),
                "skipped": sum(entry["domain"] == source.name for entry in skipped),
                "written": len(indices[source.name]),
            }
            for source in sources
        },
        "skipped_count": len(skipped),
        "skipped": skipped,
        "coco_unannotated_count": len(unannotated),
        "coco_unannotated": unannotated,
    }


def build(
    out: str | os.PathLike,
    *,
    flickr_landscape: str | os.PathLike | None = None,
    matterport: str | os.PathLike | None = None,
    megadepth: str | os.PathLike | None = None,
    coco_images: str | os.PathLike | None = None,
    coco_annotations: str | os.PathLike | None = None,
    domains: Sequence[tuple[str, str | os.PathLike]] = (),
    size: int = 512,
    per_domain: int = 500,
    seed: int = 0,
    clip_model: str = DEFAULT_CLIP_MODEL,
    clip_pretrained: str = DEFAULT_CLIP_PRETRAINED,
    device: str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    feature_cache: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    mask_ratio_range: tuple[float, float] | None = None,
    mask_generator=None,
    mask_objects=None,
    min_side: int | None = None,
    weights_dir: str | os.PathLike | None = None,
    encoder: ClipEncoder | None = None,
    progress: bool = True,
    on_step: Callable[[str, int], None] | None = None,
) -> BuildReport:
    """Build a MISATO folder from raw datasets (see the module docstring and docs/build.md).

    Args:
        out: output folder (must be empty or missing unless ``resume`` or ``overwrite``).
        flickr_landscape, matterport, megadepth, coco_images, coco_annotations: raw dataset folders
            (root or any folder inside) and the COCO instances JSON.
        domains: extra ``(name, folder)`` domains read as generic recursive image folders.
        size: output side in pixels.
        per_domain: representatives (clusters) per domain.
        seed: clustering ``random_state`` and the root of every mask's random stream.
        clip_model, clip_pretrained: the CLIP image encoder (see :func:`misato.build.features.load_clip`).
        device, batch_size, num_workers: feature extraction (device defaults to CUDA when available).
        feature_cache: cache root for features (default ``$MISATO_CACHE``, i.e. ``~/.cache/misato``; rows go to its
            ``features/`` folder, see :mod:`misato.cache`).
        resume: continue an interrupted build in ``out``.
        overwrite: delete what a previous build wrote in ``out`` (:data:`BUILD_POLICY`; nothing else) and start
            afresh. Not together with ``resume``.
        mask_ratio_range: ``(lo, hi)`` hole-ratio range handed to the mask generator; ``lo`` is also the
            minimum ratio a COCO background mask must keep after its objects are removed. None = generator default.
        mask_generator: object with ``sample(rng) -> (bool [size, size], kinds)``; default: the ``misato``
            preset of :mod:`misato.masks` with ``mask_objects`` (or, when not given, the COCO annotation file).
        min_side: images whose shorter side is below this are skipped as too small (default ``size // 2``,
            i.e. at most 2× upsampling).
        weights_dir: where to look for CLIP weights (``--weights-dir``).
        encoder: an already loaded encoder (overrides ``clip_model``/``clip_pretrained``).
        on_step: called as ``on_step(stage, count)`` after each feature batch (``"features"``) and each written
            image (``"write"``); raising from it interrupts the build (used by the resume tests).
    Returns:
        A :class:`BuildReport`.
    """
    out = Path(out).expanduser()
    if size < 8 or per_domain < 1:
        raise MisatoError(f"--size must be >= 8 and --per-domain >= 1 (got {size}, {per_domain})")
    check_memory(WRITE_BYTES_PER_PIXEL * size**2, f"--size {size} build")
    mask_ratio_range = check_ratio_range(mask_ratio_range, "--mask-ratio-range")
    min_side = size // 2 if min_side is None else min_side
    device = local_device(device)
    given = {
        "flickr_landscape": flickr_landscape,
        "matterport": matterport,
        "megadepth": megadepth,
        "coco_images": coco_images,
        "coco_annotations": coco_annotations,
    }
    settings = {
        **{key: str(Path(value).expanduser().resolve()) if value is not None else None for key, value in given.items()},
        "domains": [[name, str(Path(folder).expanduser().resolve())] for name, folder in domains],
        "size": size,
        "per_domain": per_domain,
        "seed": seed,
        "clip_model": encoder.model_name if encoder else clip_model,
        "clip_pretrained": encoder.pretrained if encoder else str(clip_pretrained),
        "mask_ratio_range": list(mask_ratio_range) if mask_ratio_range is not None else None,
        "mask_objects": str(Path(mask_objects).expanduser().resolve()) if mask_objects is not None else None,
        "mask_generator": None if mask_generator is None else f"{type(mask_generator).__module__}.{type(mask_generator).__qualname__}",
        "min_side": min_side,
        "batch_size": batch_size,  # features' last bits depend on the batch they are computed in
    }
    rank, world = rank_and_world()
    inputs = [value for key, value in given.items() if value is not None and key != "coco_annotations"]
    inputs += [folder for _, folder in domains]
    # the inputs are read and checked before the output folder is touched (an overwrite deletes)
    sources, unannotated = collect_sources(**given, domains=domains)
    generator = mask_generator
    if generator is None:  # made before the long feature stage, so a missing generator fails fast
        objects = mask_objects if mask_objects is not None else coco_annotations
        try:
            generator = default_mask_generator(size, mask_ratio_range, objects)
        except MisatoError as error:
            if error.option == "objects":  # build's own argument: mask_objects (--mask-objects)
                error.option = "mask_objects"
            raise
        settings["objects_sha256"] = check_object_masks(objects, progress and rank == 0) if objects else None
    out_existed = out.exists()
    if overwrite:  # it deletes, so rank 0 alone prepares the folder and the other ranks take its outcome
        refusal = None
        if rank == 0:
            try:
                prepare_output(out, BUILD_POLICY, resume=resume, overwrite=True, inputs=inputs)
            except MisatoError as error:
                refusal = error
        message = broadcast_from_rank0(None if refusal is None else str(refusal))
        if message is not None:
            raise refusal or MisatoError(message)
        previous = None
    else:
        previous = prepare_output(out, BUILD_POLICY, resume=resume, inputs=inputs)
    if previous is not None and previous.complete:
        if rank == 0 and (out / STATE_DIR).exists():
            shutil.rmtree(out / STATE_DIR)
        return BuildReport(out, already_complete=True)
    if previous is not None and previous.record != settings:
        saved = previous.record
        differing = sorted(key for key in set(saved) | set(settings) if saved.get(key) != settings.get(key))
        raise MisatoError(f"--resume: the build in {out} used different settings ({', '.join(differing)}); use the "
                          "same options, or start again with --overwrite")
    state = out / STATE_DIR
    barrier()  # every rank has checked the output before rank 0 writes into it
    plan = _state_json(state / "plan.json")
    plan_was_saved = plan is not None
    encoder_info = _state_json(state / "encoder.json")
    if plan is None:
        encoder = encoder or load_clip(clip_model, clip_pretrained, device, weights_dir)  # fails before any write
        if rank == 0:
            _write_json(state / "settings.json", settings)
        encoder_info = encoder.describe()
        cache_root = Path(feature_cache).expanduser() if feature_cache else misato_cache_dir()
        hook = (lambda count: on_step("features", count)) if on_step else None
        try:
            features = [
                extract_features(
                    source.items, encoder, cache_root, batch_size, num_workers, min_side, progress, hook,
                    f"CLIP {source.name}"
                )
                for source in sources
            ]
            if rank != 0:
                return BuildReport(out)
            entries, skipped = _plan(sources, features, per_domain, seed)
        except MisatoError:
            # refused on its settings (features that cannot fit, fewer images than --per-domain): a resume could
            # only be refused again, so a fresh build leaves no state behind; the cached features stay
            if previous is None and rank == 0:
                discard_refused_start(out, out / STATE_DIR, made_here=not out_existed)
            raise
        plan = {"entries": entries, "skipped": skipped}
        _write_json(state / "encoder.json", encoder_info)
        _write_json(state / "plan.json", plan)
    elif rank != 0:
        return BuildReport(out)
    min_ratio = mask_ratio_range[0] if mask_ratio_range is not None else 0.0
    by_domain = {source.name: source for source in sources}
    by_path = {source.name: {item.relative_path: item for item in source.items} for source in sources}
    if plan_was_saved:  # a resumed build: its raw files may have been changed while it was stopped
        _check_sources_unchanged(plan["entries"], by_path, out)
    rows = []
    for entry in tqdm(plan["entries"], desc="writing images", unit="img", disable=not progress):
        record_path = state / "records" / f"{entry['index']:04d}.json"
        row = _state_json(record_path)
        if row is None:
            row = _write_one(entry, by_domain[entry["domain"]], by_path[entry["domain"]], size, seed, generator, min_ratio, out)
            _write_json(record_path, row)
            if on_step:
                on_step("write", entry["index"])
        rows.append(row)
    counts = {source.name: sum(row["domain"] == source.name for row in rows) for source in sources}
    atomic_write_text(out / MANIFEST_NAME, _manifest_text(rows))
    arguments = {**settings, "device": device, "num_workers": num_workers}
    report = _build_record(arguments, encoder_info, generator, rows, sources, plan["skipped"], unannotated)
    _write_json(out / BUILD_JSON, report)
    shutil.rmtree(state)
    return BuildReport(out, counts, plan["skipped"])
