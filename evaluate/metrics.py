"""Stateful inpainting metrics for a training or evaluation loop (torchmetrics-style), and the per-pair
preparation the folder evaluator shares with it.

    metrics = InpaintingMetrics(protocol="asuka", metrics=["psnr", "lpips", "fid"], device="cuda")
    for pred, gt, mask in loader:            # float32 NCHW in [0, 1] (or uint8), mask [N, 1, H, W]
        metrics.update(pred, gt, mask)
    result = metrics.compute()               # EvaluationResult: rows + summary, as evaluate_folder
    metrics.reset()

Every pair goes through :func:`prepare_pair` (composite, cheap per-image metrics, the protocol's preprocessing
of composite and ground truth for the feature network) and then through the networks in
:meth:`InpaintingMetrics.update_prepared`; :func:`evaluate.evaluate_folder` runs :func:`prepare_pair` in its
DataLoader workers and feeds the same entry, so both give the same numbers bit for bit.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evaluate.functional import composite, grad_error, mask_ratio, psnr, ssim, to_uint8_images, to_uint8_masks
from evaluate.metric_info import METRICS, metrics_needing, parse_metrics
from evaluate.protocols import get_protocol
from misato import distributed
from misato.cache import FeatureCache
from misato.errors import MisatoError
from misato.io import binarize_mask
from misato.reproducibility import float32_matmul
from misato.layout import domain_of_name

CPU_METRICS = {"psnr": psnr, "ssim": ssim}
LPIPS_BATCH_MIN_SIDE = 256
"""Smallest image side at which LPIPS runs several pairs per forward on the CPU (see ``InpaintingMetrics._lpips``)."""
MASK_FILES_SHOWN = 5
"""How many mask files (or image names) a :class:`MaskWarning` lists before ``… (+k more)``."""


class MaskWarning(UserWarning):
    """Masks that make the numbers mean something else than usual: grey (non-binary) masks, or masks without a
    hole. Issued once per :meth:`InpaintingMetrics.compute`, listing the first files and the count."""


@dataclass(frozen=True)
class PairSpec:
    """What :func:`prepare_pair` computes (picklable, sent to DataLoader workers).

    Attributes:
        cpu_metrics: per-image metrics computed on the CPU (subset of ``psnr``, ``ssim``, ``grad``).
        lpips: keep the full-size composite and ground truth for LPIPS.
        preprocess: the protocol's preprocessing route for the feature network, or None (no features).
        cache: ground-truth feature cache looked up here (None: no lookups).
        clip_size: input side of the CLIP score's network, or None (no CLIP score).
    """

    cpu_metrics: tuple[str, ...]
    lpips: bool
    preprocess: str | None
    cache: FeatureCache | None = None
    clip_size: int | None = None


@dataclass
class PreparedPair:
    """One scored pair before the networks run.

    Attributes:
        row: ``name``, ``domain``, ``mask_ratio`` and the CPU metrics.
        size: ``(height, width)`` of the images.
        composite, gt: ``uint8 [3, H, W]`` for LPIPS (None when LPIPS is not computed).
        fake_input, real_input: the feature network's prepared inputs (None when not needed; ``real_input`` is
            None when the ground-truth features came from the cache).
        real_features: cached ground-truth features ``float32 [2048]`` or None.
        gt_key: the cache key of the ground truth (file sha256), or None.
        clip_inputs: ``float32 [2, 3, S, S]`` CLIP inputs of prediction and ground truth (black outside the
            hole), or None.
        soft_mask: the mask has values strictly between 0 and 255 (Grad uses them, the rest binarises).
    """

    row: dict[str, Any]
    size: tuple[int, int]
    composite: Tensor | None = None
    gt: Tensor | None = None
    fake_input: Tensor | None = None
    real_input: Tensor | None = None
    real_features: np.ndarray | None = None
    gt_key: str | None = None
    clip_inputs: Tensor | None = None
    soft_mask: bool = False


def _chw(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def prepare_pair(spec: PairSpec, name: str, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, domain: str,
                 gt_key: str | None = None) -> PreparedPair:
    """Composite, CPU metrics and network inputs of one pair.

    Args:
        pred, gt: ``uint8 [H, W, 3]``; mask: ``uint8 [H, W]``, 255 = hole (soft values allowed: Grad uses them,
            everything else binarises with :func:`misato.io.binarize_mask`).
    """
    merged = composite(pred, gt, mask)
    row: dict[str, Any] = {"name": name, "domain": domain, "mask_ratio": mask_ratio(mask)}
    for metric in spec.cpu_metrics:
        row[metric] = grad_error(pred, gt, mask) if metric == "grad" else CPU_METRICS[metric](merged, gt)
    pair = PreparedPair(row, gt.shape[:2], gt_key=gt_key, soft_mask=bool(((mask > 0) & (mask < 255)).any()))
    if spec.lpips:
        pair.composite, pair.gt = _chw(merged), _chw(gt)
    if spec.clip_size is not None:
        from evaluate.features.clip import masked_clip_inputs

        pair.clip_inputs = masked_clip_inputs(merged, gt, binarize_mask(mask), spec.clip_size)
    if spec.preprocess is not None:
        from evaluate.features import PREPROCESSORS

        prepare = PREPROCESSORS[spec.preprocess]
        pair.fake_input = prepare(merged)
        if spec.cache is not None and gt_key is not None:
            pair.real_features = spec.cache.get(gt_key)
        if pair.real_features is None:
            pair.real_input = prepare(gt)
    return pair


def build_networks(protocol, metrics, inception_weights=None, alexnet_weights=None, weights_dir=None, device="cpu"):
    """The feature extractor and LPIPS network the metrics need (None where not needed)."""
    extractor = lpips_net = None
    needs = metrics_needing(metrics)
    if not {"features", "lpips"} & needs:
        return extractor, lpips_net
    from evaluate.features import build_feature_extractor, build_lpips

    if "features" in needs:
        extractor = build_feature_extractor(
            protocol.feature_network, weights_path=inception_weights, weights_dir=weights_dir, device=device
        )
        if extractor.preprocess_route != protocol.preprocess:
            raise ValueError(f"protocol {protocol.name}: {protocol.feature_network} takes {extractor.preprocess_route}")
    if "lpips" in needs:
        lpips_net = build_lpips(protocol.lpips_net, backbone_path=alexnet_weights, weights_dir=weights_dir, device=device)
    return extractor, lpips_net


class InpaintingMetrics:
    """Accumulates per-image metrics and features over batches; :meth:`compute` gives what ``evaluate_folder``
    writes (rows sorted by name + the summary dictionary).

    Args:
        protocol: ``asuka`` or ``comod`` (:data:`evaluate.protocols.PROTOCOLS`).
        metrics: names or ``"psnr,fid"`` (default: every metric of :data:`evaluate.metric_info.DEFAULT_METRICS`).
        device: where the networks run (``cpu``, ``cuda``, ``cuda:1``).
        inception_weights, alexnet_weights, weights_dir: weight files as for ``evaluate_folder``.
        ids_pca: PCA size before the IDS SVM: None = the protocol's, ``"none"`` or an integer.
    Raises:
        MisatoError: unknown metric/protocol, missing weights, unusable device.
    """

    def __init__(self, protocol: str = "asuka", metrics: str | list[str] | None = None, device: str = "cpu",
                 inception_weights: str | os.PathLike | None = None, alexnet_weights: str | os.PathLike | None = None,
                 weights_dir: str | os.PathLike | None = None, ids_pca: str | int | None = None,
                 clip_weights: str | os.PathLike | None = None) -> None:
        self.metrics = parse_metrics(metrics)
        self.protocol = get_protocol(protocol)
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise MisatoError(f"device {device}: no CUDA device is available here; use cpu")
        self.device = str(device)
        self.ids_pca = ids_pca
        self.extractor, self.lpips_net = build_networks(
            self.protocol, self.metrics, inception_weights, alexnet_weights, weights_dir, self.device)
        self.cache: FeatureCache | None = None
        needs = metrics_needing(self.metrics)
        self.clip = None
        if "clip" in needs:
            from evaluate.features.clip import build_clip_scorer

            self.clip = build_clip_scorer(clip_weights, weights_dir, self.device)
        self.spec = PairSpec(
            cpu_metrics=tuple(m for m in self.metrics if METRICS[m].needs == "cpu"),
            lpips="lpips" in needs,
            preprocess=self.protocol.preprocess if "features" in needs else None,
            clip_size=self.clip.input_size if self.clip is not None else None,
        )
        self.reset()

    def use_cache(self, cache: FeatureCache) -> None:
        """Look ground-truth features up in ``cache`` (in :func:`prepare_pair`, by the pair's ``gt_key``) and store
        the ones computed here; pairs without a key are never cached."""
        self.cache = cache
        self.spec = dataclasses.replace(self.spec, cache=cache)

    @property
    def weights(self) -> dict[str, str]:
        """``{registry name: sha256}`` of every weight file in use."""
        return {**getattr(self.extractor, "weights", {}), **getattr(self.lpips_net, "weights", {}),
                **getattr(self.clip, "weights", {})}

    def reset(self) -> None:
        """Forget every image seen so far (networks stay loaded)."""
        self.rows: list[dict[str, Any]] = []
        self.real: dict[str, np.ndarray] = {}
        self.fake: dict[str, np.ndarray] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.soft_masks: list[str] = []
        self._synced = False

    def update(self, pred: Tensor, gt: Tensor, mask: Tensor, names: list[str] | None = None,
               domains: list[str] | None = None) -> None:
        """Add a batch.

        Args:
            pred, gt: ``[N, 3, H, W]`` float in [0, 1] (quantised once, ``round(x·255)``) or uint8, any device.
            mask: ``[N, 1, H, W]`` or ``[N, H, W]``: bool, uint8 (255 = hole) or float in [0, 1] (→ ``round(m·255)``).
            names: unique image names (default ``000000``, ``000001``, … in update order; pass names when
                several processes or loaders contribute).
            domains: per-image domain for the breakdown (default: MISATO index ranges of the name).
        """
        pred_u8, gt_u8, mask_u8 = to_uint8_images(pred, "pred"), to_uint8_images(gt, "gt"), to_uint8_masks(mask)
        if pred_u8.shape != gt_u8.shape or mask_u8.shape != gt_u8.shape[:3]:
            raise MisatoError(f"pred {tuple(pred.shape)}, gt {tuple(gt.shape)} and mask {tuple(mask.shape)} "
                              "must agree in N, H and W")
        if names is None:
            start = len(self.rows)
            names = [f"{start + i:06d}" for i in range(len(gt_u8))]
        names = [str(name) for name in names]
        domains = list(domains) if domains is not None else [domain_of_name(name) for name in names]
        if len(names) != len(gt_u8) or len(domains) != len(gt_u8):
            raise MisatoError(f"names/domains: expected {len(gt_u8)} entries, got {len(names)}/{len(domains)}")
        self.update_prepared([prepare_pair(self.spec, name, p, g, m, domain)
                              for name, domain, p, g, m in zip(names, domains, pred_u8, gt_u8, mask_u8)])

    def update_prepared(self, pairs: list[PreparedPair]) -> None:
        """Run the networks on pairs from :func:`prepare_pair` (made with :attr:`spec`) and record the results."""
        seen = {row["name"] for row in self.rows}
        repeated = sorted({p.row["name"] for p in pairs} & seen) or len({p.row["name"] for p in pairs}) < len(pairs)
        if repeated:
            raise MisatoError(f"image names repeat ({repeated}); pass unique names to update()")
        with torch.inference_mode(), float32_matmul():
            if self.lpips_net is not None:
                self._lpips(pairs)
            if self.extractor is not None:
                self._features(pairs)
            if self.clip is not None:
                self._clip(pairs)
        for pair in pairs:
            self.rows.append(pair.row)
            self.sizes[pair.row["name"]] = pair.size
            if pair.soft_mask:
                self.soft_masks.append(pair.row["name"])
        self._synced = False

    def _lpips(self, pairs: list[PreparedPair]) -> None:
        """On the CPU, pairs of one size with both sides >= :data:`LPIPS_BATCH_MIN_SIDE` share a forward; every
        other pair runs alone. Below that size the CPU convolutions' last bits depend on the batch size (their
        feature maps shrink to a few pixels, where oneDNN switches algorithm; measured at 48–128 px), and on CUDA
        it is not measured, so a value never depends on its companions (tested bit for bit at 256 px across
        batch sizes 1, 2, 3 and 7)."""
        groups: dict[Any, list[PreparedPair]] = {}
        batched = torch.device(self.device).type == "cpu"
        for index, pair in enumerate(pairs):
            key = pair.size if batched and min(pair.size) >= LPIPS_BATCH_MIN_SIDE else index
            groups.setdefault(key, []).append(pair)
        for group in groups.values():
            merged = torch.stack([p.composite for p in group]).to(self.device)
            gt = torch.stack([p.gt for p in group]).to(self.device)
            for pair, value in zip(group, self.lpips_net.distance_uint8(merged, gt).tolist()):
                pair.row["lpips"] = float(value)

    def _clip(self, pairs: list[PreparedPair]) -> None:
        """One pair per forward, as for LPIPS, so that a score never depends on the rest of the batch."""
        for pair in pairs:
            inputs = pair.clip_inputs.to(self.device)
            pair.row["clip"] = float(self.clip.score_inputs(inputs[:1], inputs[1:])[0])
            pair.clip_inputs = None

    def _features(self, pairs: list[PreparedPair]) -> None:
        """One forward for the composites and the uncached ground truths (an image's features do not depend on
        the rest of the batch: tests/evaluate/test_features.py checks it bit for bit)."""
        missing = [p for p in pairs if p.real_features is None]
        inputs = torch.stack([p.fake_input for p in pairs] + [p.real_input for p in missing]).to(self.device)
        features = self.extractor.forward_prepared(inputs).cpu().numpy()
        for pair, vector in zip(pairs, features):
            self.fake[pair.row["name"]] = vector
        for pair, vector in zip(missing, features[len(pairs):]):
            pair.real_features = vector
            if self.cache is not None and pair.gt_key is not None:
                self.cache.put(pair.gt_key, vector)
        for pair in pairs:
            self.real[pair.row["name"]] = pair.real_features

    def sync(self) -> None:
        """Merge every rank's rows and features into each rank (no-op unless a process group is initialised, or
        when nothing was added since the last sync). Collective: call it on every rank."""
        if self._synced:
            return
        self._synced = True
        self.rows, self.real, self.fake = distributed.gather(self.rows, self.real, self.fake)
        shards = distributed.all_gather_objects((self.sizes, self.soft_masks))
        self.sizes = {name: size for sizes, _ in shards for name, size in sizes.items()}
        self.soft_masks = sorted(name for _, soft in shards for name in soft)
        names = [row["name"] for row in self.rows]
        if len(set(names)) != len(names):
            raise MisatoError("image names repeat across processes; pass unique names to update()")

    def compute(self, method: str | None = None, mask_files: dict[str, os.PathLike] | None = None):
        """Sync (collective, see :meth:`sync`), then the rows (sorted by name) and the summary ``evaluate_folder`` writes.

        Grey (non-binary) masks and masks without a hole are counted in the summary (``soft_masks``,
        ``masks_without_hole``) and reported by one :class:`MaskWarning` each, naming the first few.

        Args:
            method: label stored in the summary.
            mask_files: image name → mask file, to name files rather than images in the warnings.

        Returns:
            :class:`evaluate.evaluator.EvaluationResult` (identical on every rank).
        Raises:
            MisatoError: no images, or too few for FID/IDS or the IDS PCA size.
        """
        from evaluate.evaluator import EvaluationResult, summarise  # the run-folder schema lives there

        self.sync()
        if not self.rows:
            raise MisatoError("no images were added; call update() first")
        rows = sorted(self.rows, key=lambda row: row["name"])
        summary = summarise(rows, self.real, self.fake, self.metrics, self.protocol, self.ids_pca,
                            set(self.sizes.values()), self.weights, method, len(self.soft_masks))
        warn_about_masks(self.soft_masks, [row["name"] for row in rows if row["mask_ratio"] == 0.0], len(rows),
                         mask_files)
        return EvaluationResult(rows, summary)


def warn_about_masks(soft: list[str], no_hole: list[str], n: int,
                     mask_files: dict[str, os.PathLike] | None = None) -> None:
    """One :class:`MaskWarning` for the grey masks and one for the masks without a hole (image names ``soft``,
    ``no_hole`` among ``n``), each listing the first :data:`MASK_FILES_SHOWN` files (or names)."""
    def listing(names: list[str]) -> str:
        shown = ", ".join(str(mask_files[name]) if mask_files else name for name in names[:MASK_FILES_SHOWN])
        return shown + (f", … (+{len(names) - MASK_FILES_SHOWN} more)" if len(names) > MASK_FILES_SHOWN else "")

    if soft:
        warnings.warn(f"{len(soft)} of {n} masks are not binary (grey values between 0 and 255): {listing(soft)}; "
                      "Grad composites with the grey values, every other metric with the mask binarised at 128, "
                      "so Grad is not what a binary mask gives", MaskWarning, stacklevel=3)
    if no_hole:
        warnings.warn(f"{len(no_hole)} of {n} masks have no hole: {listing(no_hole)}; their composite is the ground "
                      "truth, so each adds PSNR 70 dB, SSIM 1, LPIPS 0 and Grad 0 to the means (counted as "
                      "masks_without_hole in summary.json)", MaskWarning, stacklevel=3)
