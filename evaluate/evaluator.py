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
import platform
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from evaluate.functional import (
    check_ids_pca,
    composite,
    fid,
    grad_error,
    inception_discriminative_scores,
    mask_ratio,
    psnr,
    ssim,
)
from evaluate.metric_info import ALL_METRICS, METRICS
from evaluate.protocols import Protocol, get_protocol, ids_pca_dimensions
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

PER_IMAGE_COLUMNS = ("name", "psnr", "ssim", "lpips", "grad", "mask_ratio", "domain")
MASK_RATIO_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
FEATURE_METRICS = frozenset({"fid", "uids", "pids"})
FEATURE_DIM = 2048
"""Width of the Inception features both protocols use."""
TRIM_EVERY_BATCHES = 8
"""How often freed heap pages go back to the OS (each trim costs page faults on the next batches)."""
CPU_METRICS = {"psnr": psnr, "ssim": ssim}


def parse_metrics(metrics: str | list[str] | None) -> list[str]:
    """``"psnr,fid"`` / list / None (all) → validated metric names in canonical order."""
    if metrics is None:
        return list(ALL_METRICS)
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = sorted(set(names) - set(ALL_METRICS))
    if unknown or not names:
        raise MisatoError(f"unknown metrics {unknown or names}; choose from {','.join(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in names]


def mask_ratio_bin(ratio: float) -> str:
    """``0.234`` → ``"20-30%"``; the last bin is ``"60%+"``."""
    for low, high in zip(MASK_RATIO_BINS, MASK_RATIO_BINS[1:]):
        if ratio < high:
            return f"{int(low * 100)}-{int(high * 100)}%"
    return f"{int(MASK_RATIO_BINS[-1] * 100)}%+"


@dataclass
class _Job:
    """What every worker needs to turn an index into a scored pair."""

    names: list[str]
    gt: dict[str, Path]
    pred: dict[str, Path]
    masks: dict[str, Path]
    cpu_metrics: list[str]
    hash_gt: bool


class _PairDataset(torch.utils.data.Dataset):
    """Item i → decoded composite and ground truth (``uint8 [3, H, W]`` tensors) plus the per-image row.

    User errors are returned (not raised) so the main process can report them without a worker traceback.
    """

    def __init__(self, job: _Job) -> None:
        self.job = job

    def __len__(self) -> int:
        return len(self.job.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
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
        merged = composite(pred, gt, mask)
        row: dict[str, Any] = {"name": name, "mask_ratio": mask_ratio(mask)}
        for metric in self.job.cpu_metrics:
            row[metric] = grad_error(pred, gt, mask) if metric == "grad" else CPU_METRICS[metric](merged, gt)
        return {
            "name": name,
            "row": row,
            "composite": torch.from_numpy(merged).permute(2, 0, 1).contiguous(),
            "gt": torch.from_numpy(gt).permute(2, 0, 1).contiguous(),
            "gt_sha256": hashlib.sha256(gt_bytes).hexdigest() if self.job.hash_gt else None,
        }


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


def _preflight(names: list[str], job: _Job) -> set[tuple[int, int]]:
    """Read only the headers of every file: report all size mismatches at once, before any computing.

    Returns:
        The distinct ``(height, width)`` of the ground-truth images.
    """
    problems, sizes = [], set()
    for name in names:
        try:
            with Image.open(job.gt[name]) as g, Image.open(job.pred[name]) as p, Image.open(job.masks[name]) as m:
                gt_size, pred_size, mask_size = g.size, p.size, m.size
        except (OSError, ValueError) as error:
            problems.append(f"{name}: cannot read ({error})")
            continue
        sizes.add((gt_size[1], gt_size[0]))
        if pred_size != gt_size:
            problems.append(f"{job.pred[name]}: {pred_size[0]}x{pred_size[1]}, ground truth is {gt_size[0]}x{gt_size[1]}")
        if mask_size != gt_size:
            problems.append(f"{job.masks[name]}: {mask_size[0]}x{mask_size[1]}, ground truth is {gt_size[0]}x{gt_size[1]}")
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


def _networks(protocol: Protocol, metrics: list[str], inception_weights, alexnet_weights, weights_dir, device):
    """Build the feature extractor and LPIPS network the metrics need (None where not needed)."""
    extractor = lpips_net = None
    if not (FEATURE_METRICS | {"lpips"}) & set(metrics):
        return extractor, lpips_net
    from evaluate.features import build_feature_extractor, build_lpips

    if FEATURE_METRICS & set(metrics):
        extractor = build_feature_extractor(
            protocol.feature_network, weights_path=inception_weights, weights_dir=weights_dir, device=device
        )
    if "lpips" in metrics:
        lpips_net = build_lpips(protocol.lpips_net, backbone_path=alexnet_weights, weights_dir=weights_dir, device=device)
    # Same math, faster convolutions (measured ~1.7-2x on CPU; features equal to ~1e-6, see benchmarks/).
    for network in (extractor, lpips_net):
        if network is not None:
            network.to(memory_format=torch.channels_last)
    return extractor, lpips_net


def _to_unit(tensors: list[torch.Tensor], device: str) -> torch.Tensor:
    """Stack ``uint8 [3, H, W]`` tensors → float32 ``[N, 3, H, W]`` in [0, 1], channels-last in memory."""
    batch = torch.stack(tensors).to(device=device, dtype=torch.float32).div_(255.0)
    return batch.contiguous(memory_format=torch.channels_last)


def _score_batch(items, extractor, lpips_net, cache: FeatureCache | None, device: str, real, fake, rows) -> None:
    """Run the networks on one batch (grouped by image size) and record rows and features in place."""
    by_size: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_size[tuple(item["gt"].shape)].append(item)
    for group in by_size.values():
        names = [item["name"] for item in group]
        merged = _to_unit([item["composite"] for item in group], device)
        gts = _to_unit([item["gt"] for item in group], device)
        if lpips_net is not None:
            distances = lpips_net(merged, gts).detach().cpu().numpy().astype(np.float64)
            for item, value in zip(group, distances):
                item["row"]["lpips"] = float(value)
        if extractor is not None:
            cached = {}
            if cache is not None:
                for item in group:
                    vector = cache.get(item["gt_sha256"])
                    if vector is not None:
                        cached[item["name"]] = vector
            missing = [i for i, item in enumerate(group) if item["name"] not in cached]
            features = extractor(torch.cat([merged, gts[missing]]) if missing else merged).detach().cpu().numpy()
            for i, name in enumerate(names):
                fake[name] = features[i]
            for offset, i in enumerate(missing):
                vector = features[len(group) + offset]
                real[names[i]] = vector
                if cache is not None:
                    cache.put(group[i]["gt_sha256"], vector)
            for name, vector in cached.items():
                real[name] = vector
        for item in group:
            rows.append(item["row"])


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


def _versions() -> dict[str, str]:
    import lpips
    import scipy
    import skimage
    import sklearn
    import torchvision

    return {
        "misato-bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "scikit-image": skimage.__version__,
        "lpips": getattr(lpips, "__version__", "unknown"),
    }


def _summarise(rows, real, fake, metrics, protocol, pca_dim, weights, method) -> dict[str, Any]:
    names = [row["name"] for row in rows]
    scores: dict[str, float] = {}
    for metric in metrics:
        if METRICS[metric].per_image:
            scores[metric] = _mean(rows, metric)
    if FEATURE_METRICS & set(metrics):
        real_matrix = np.stack([real[n] for n in names])
        fake_matrix = np.stack([fake[n] for n in names])
        if "fid" in metrics:
            scores["fid"] = fid(real_matrix, fake_matrix)
        if {"uids", "pids"} & set(metrics):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                u_ids, p_ids = inception_discriminative_scores(real_matrix, fake_matrix, pca_dim)
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)
            if "uids" in metrics:
                scores["uids"] = u_ids
            if "pids" in metrics:
                scores["pids"] = p_ids
    ordered = {m: scores[m] for m in ALL_METRICS if m in scores}
    return {
        "metrics": ordered,
        "n": len(rows),
        "method": method,
        "protocol": protocol.name,
        "protocol_details": protocol.as_dict(),
        "ids_pca": pca_dim if {"uids", "pids"} & set(metrics) else None,
        "ids_samples": 2 * len(rows) if {"uids", "pids"} & set(metrics) else None,
        "weights": weights,
        "version": __version__,
        "versions": _versions(),
        "by_domain": _breakdown(rows, lambda r: r["domain"], metrics, real, fake, with_fid=True),
        "by_mask_ratio": _breakdown(rows, lambda r: mask_ratio_bin(r["mask_ratio"]), metrics, real, fake, with_fid=False),
    }


def _write_outputs(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any], metrics: list[str]) -> None:
    """``per_image.csv``, ``summary.csv`` and ``summary.json`` (the JSON last: its presence marks a finished run)."""
    import pandas as pd

    columns = [c for c in PER_IMAGE_COLUMNS if c in ("name", "mask_ratio", "domain") or c in metrics]
    atomic_write_text(out / "per_image.csv", pd.DataFrame(rows, columns=columns).to_csv(index=False, float_format="%.6f"))
    table = [{"group": "all", "subset": "all", "n": summary["n"], **summary["metrics"]}]
    for group in ("by_domain", "by_mask_ratio"):
        for subset, entry in summary[group].items():
            table.append({"group": group[3:], "subset": subset, **entry})
    header = ["group", "subset", "n"] + [m for m in ALL_METRICS if m in metrics]
    atomic_write_text(out / "summary.csv", pd.DataFrame(table, columns=header).to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")


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
) -> EvaluationResult:
    """Score the predictions in ``pred`` against the ground truth ``gt`` (see ``misato evaluate --help``).

    Args:
        pred: folder of predictions ``<name>.png`` (or ``.jpg``), one per ground-truth image.
        gt: a MISATO root (``image/``, ``mask/``, optional ``manifest.csv``) or an image folder with ``mask``.
        out: run folder for ``per_image.csv``, ``summary.json``, ``summary.csv``; None writes nothing.
        protocol: ``asuka`` (official MISATO scripts) or ``comod`` (pytorch-fid / Co-Mod-GAN convention).
        metrics: subset of ``psnr,ssim,lpips,fid,uids,pids,grad`` (default all).
        ids_pca: PCA size before the IDS SVM: None = the protocol's, ``"none"`` or an integer.
        method: label stored in the summary (default: the prediction folder's name).
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
    names = pair_by_stem(pairs.images, predictions, "ground-truth images", "prediction")
    out_dir = Path(out) if out is not None else None
    rank, world, device = distributed.setup(device)
    if device.startswith("cuda"):  # reported numbers are float32: TF32 would change the features
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if out_dir is not None:
        check_output_location(out_dir, [pred_dir, gt_image_dir, pairs.masks[names[0]].parent])
        if (out_dir / "summary.json").exists() and not overwrite:
            raise MisatoError(f"{out_dir} already holds a finished evaluation; pass --overwrite or choose another --out")
    needs_features = bool(FEATURE_METRICS & set(metric_names))
    job = _Job(
        names=names[rank::world],
        gt=pairs.images,
        pred=predictions,
        masks=pairs.masks,
        cpu_metrics=[m for m in ("psnr", "ssim", "grad") if m in metric_names],
        hash_gt=needs_features and use_cache,
    )
    sizes = _preflight(names, job)
    pca_dim = ids_pca_dimensions(chosen, ids_pca, sizes) if {"uids", "pids"} & set(metric_names) else None
    if needs_features and len(names) < 2:
        raise MisatoError(f"FID/IDS need at least 2 images, got {len(names)}; pass --metrics psnr,ssim,lpips,grad")
    check_ids_pca(pca_dim, len(names), FEATURE_DIM)  # fail before any network runs

    extractor, lpips_net = _networks(chosen, metric_names, inception_weights, alexnet_weights, weights_dir, device)
    weights = {**(extractor.weights if extractor is not None else {}), **(lpips_net.weights if lpips_net is not None else {})}
    cache = None
    if needs_features and use_cache:
        feature_sha = extractor.weights[chosen.feature_weights]
        cache = FeatureCache(chosen.name, feature_sha, cache_dir)

    loader = torch.utils.data.DataLoader(
        _PairDataset(job),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
    )
    rows: list[dict[str, Any]] = []
    real: dict[str, np.ndarray] = {}
    fake: dict[str, np.ndarray] = {}
    batches_done = 0
    with torch.inference_mode(), tqdm(total=len(job.names), desc="evaluate", unit="img", disable=not progress) as bar:
        for batch in loader:
            errors = [item["error"] for item in batch if "error" in item]
            if errors:
                raise MisatoError("; ".join(errors))
            _score_batch(batch, extractor, lpips_net, cache, device, real, fake, rows)
            bar.update(len(batch))
            del batch  # the decoded images: free them before trimming
            batches_done += 1
            if batches_done % TRIM_EVERY_BATCHES == 0:
                release_freed_memory()

    rows, real, fake = distributed.gather(rows, real, fake)
    rows.sort(key=lambda row: row["name"])
    for row in rows:
        row["domain"] = pairs.domains[row["name"]]
    summary = None
    if rank == 0:
        summary = _summarise(rows, real, fake, metric_names, chosen, pca_dim, weights, method or pred_dir.resolve().name)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_outputs(out_dir, rows, summary, metric_names)
    summary = distributed.broadcast_from_rank0(summary)
    return EvaluationResult(rows, summary)
