"""CLIP image features for selection: loading the model, batched extraction, an on-disk cache, rank sharding.

Features are the CLIP image embedding (``encode_image``), L2-normalised, ``float32 [N, D]``. Images are decoded
and preprocessed (open_clip's own eval transform) in DataLoader workers.

Batch invariance: CPU/GPU kernels change the last bits of a feature with the batch it is computed in (measured:
up to 3e-6 for ViT-B-32), and near-ties in the clustering can turn on such bits. So batches are fixed chunks of
``batch_size`` consecutive items, a batch with any uncached item is recomputed whole, the cache is keyed by
device type and batch size, and ranks take whole batches. Every feature is therefore computed in the same batch
whether the run is fresh, resumed or distributed, and the result is bit-identical.

Cache: :class:`misato.cache.FeatureCache` under ``CACHE/features/clip-<model>-<device type>-b<batch size>-<weights
digest>-v1/``, keyed by the sha256 of each file's bytes, holding the feature row or, for an unusable file, the reason.
Rows are flushed every :data:`SHARD_ROWS` (and at the end or on interruption); shards are written atomically.

Scale-out (:mod:`misato.distributed`): when the caller has joined a ``torch.distributed`` group, rank ``r`` of ``W`` takes batches ``r::W`` (batch ``b``
holds items ``b·B … b·B + B − 1``); the results are gathered back into the original order on every rank.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from misato.build.readers import SourceImage
from misato.cache import FeatureCache
from misato.checkpoint import load_error
from misato.distributed import all_gather_objects, rank_and_world
from misato.errors import MisatoError
from misato.hashing import bytes_sha256, file_sha256, state_dict_sha256
from misato.reproducibility import seeded
from misato.resources import check_memory

DEFAULT_CLIP_MODEL = "ViT-L-14"
DEFAULT_CLIP_PRETRAINED = "openai"
SHARD_ROWS = 512
"""Cached rows are flushed to a new shard once this many are pending (and at the end / on interruption)."""


@dataclass
class ClipEncoder:
    """A loaded CLIP image encoder.

    Attributes:
        model: the open_clip model (eval mode, float32) on ``device``.
        preprocess: PIL image → ``float32 [3, S, S]`` tensor (open_clip's eval transform).
        model_name: the open_clip model name as given.
        pretrained: ``"none"``, ``"openai"`` or a file path, as given.
        weights_digest: sha256 over the state dict (names, dtypes, shapes, bytes) — identifies the weights
            whatever their source, and keys the feature cache.
        weights_file: the checkpoint file used, if any, and its sha256.
        device: torch device string.
    """

    model: object
    preprocess: Callable
    model_name: str
    pretrained: str
    weights_digest: str
    device: str
    weights_file: str | None = None
    weights_file_sha256: str | None = None

    def feature_cache(self, root: str | os.PathLike | None, batch_size: int, tag: str) -> FeatureCache:
        """This encoder's rows in the feature cache under ``root``: keyed by model, weights digest, device type
        and batch size (a feature's last bits depend on the batch it is computed in)."""
        import torch

        name = f"clip-{Path(self.model_name).name}-{torch.device(self.device).type}-b{batch_size}"
        return FeatureCache(name, self.weights_digest, root, version="v1", flush_every=SHARD_ROWS, tag=tag)

    def describe(self) -> dict:
        """What ``build.json`` records about the encoder."""
        return {
            "model": self.model_name,
            "pretrained": self.pretrained,
            "weights_file": self.weights_file,
            "weights_file_sha256": self.weights_file_sha256,
            "state_dict_sha256": self.weights_digest,
        }


def _openai_entry(model_name: str):
    """The weights-registry entry of OpenAI's own checkpoint for ``model_name``, if registered."""
    from misato import weights

    return weights.REGISTRY.get(f"clip-{model_name.lower()}-openai")


def load_clip(
    model_name: str = DEFAULT_CLIP_MODEL,
    pretrained: str = DEFAULT_CLIP_PRETRAINED,
    device: str = "cpu",
    weights_dir: str | os.PathLike | None = None,
    init_seed: int = 0,
) -> ClipEncoder:
    """Load a CLIP image encoder with open_clip.

    Args:
        model_name: an open_clip model name (``ViT-L-14``) or ``local-dir:FOLDER`` (a folder holding
            ``open_clip_config.json`` and optionally weights; used by the tests for tiny models).
        pretrained: ``"none"`` (random init from ``init_seed``), ``"openai"`` (OpenAI's checkpoint, found through
            the weights registry: ``ViT-L-14.pt`` in ``--weights-dir``, ``~/.cache/misato/weights`` or
            ``$TORCH_HOME/hub/checkpoints``), or a path to a local checkpoint (open_clip state dict, safetensors,
            or an OpenAI TorchScript archive).
        device: torch device.
    Raises:
        MisatoError: unknown model, missing/unloadable weights (offline: names the file, folders and URL).
    """
    import open_clip
    import torch

    weights_file = None
    with seeded(init_seed):  # random initialisation without touching the caller's generator
        try:
            if pretrained == "none":
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
            elif pretrained == "openai" and _openai_entry(model_name) is not None:
                from misato import weights

                resolved = weights.resolve(_openai_entry(model_name).name, weights_dir=weights_dir)
                weights_file = resolved.path
                model, preprocess = _load_openai_archive(model_name, resolved.path)
            elif pretrained == "openai":
                config = open_clip.get_pretrained_cfg(model_name, "openai")
                if config == {}:
                    raise MisatoError(f"open_clip has no OpenAI weights for {model_name!r}; pass --clip-pretrained FILE")
                from misato.weights import is_offline

                if is_offline():  # open_clip would try the hub (and retry for a minute): no attempt at all
                    url = config.get("url") or config.get("hf_hub", "")
                    raise MisatoError(f"--clip-pretrained openai for {model_name}: downloads are off (offline); "
                                      f"download {url} and pass --clip-pretrained FILE")
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained="openai")
            else:
                weights_file = Path(pretrained).expanduser()
                if not weights_file.is_file():
                    raise MisatoError(
                        f"--clip-pretrained {pretrained!r}: not 'none', 'openai' or an existing checkpoint file"
                    )
                if zipfile_is_torchscript(weights_file):
                    model, preprocess = _load_openai_archive(model_name, weights_file)
                else:
                    _warn_if_openai_needs_quickgelu(model_name, weights_file)
                    # created first, then loaded: open_clip ignores `pretrained` for local-dir: model names
                    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
                    try:
                        open_clip.load_checkpoint(model, str(weights_file))
                    except Exception as error:  # noqa: BLE001 - whatever the file's reader raised: one line
                        if str(error).startswith("Error(s) in loading state_dict"):  # another network's tensors
                            raise MisatoError(f"{weights_file}: not a checkpoint of CLIP {model_name} (its tensors "
                                              "do not match the model's)") from None
                        raise load_error(weights_file, f"CLIP {model_name}", error) from None
        except MisatoError:
            raise
        except (RuntimeError, ValueError, FileNotFoundError, KeyError, OSError) as error:
            raise MisatoError(f"cannot create CLIP model {model_name!r} with weights {pretrained!r}: {error}") from None
    model = model.to(device=device, dtype=torch.float32).eval()
    file_sha = None
    if weights_file is not None:
        file_sha = file_sha256(weights_file)
    return ClipEncoder(
        model=model,
        preprocess=preprocess,
        model_name=model_name,
        pretrained=str(pretrained),
        weights_digest=state_dict_sha256(model),
        device=str(device),
        weights_file=str(weights_file) if weights_file is not None else None,
        weights_file_sha256=file_sha,
    )


def _warn_if_openai_needs_quickgelu(model_name: str, weights_file: Path) -> None:
    """A plain state dict says nothing about its activation: open_clip builds ``ViT-L-14`` with GELU, while
    OpenAI's weights were trained with QuickGELU (their TorchScript archive is loaded right). Warn when the model
    also exists with OpenAI weights, since such a file gives wrong embeddings without the ``-quickgelu`` name."""
    import open_clip

    if not model_name.endswith("-quickgelu") and open_clip.get_pretrained_cfg(model_name, "openai"):
        warnings.warn(
            f"--clip-pretrained {weights_file}: building {model_name} with GELU; if this file holds OpenAI's weights "
            f"(trained with QuickGELU), pass --clip-model {model_name}-quickgelu or OpenAI's {model_name}.pt archive",
            UserWarning, stacklevel=3)


def zipfile_is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (OpenAI's released ``ViT-L-14.pt`` is one)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as handle:
        return any(name.endswith("constants.pkl") for name in handle.namelist())


def _load_openai_archive(model_name: str, path: Path):
    """Load OpenAI's TorchScript checkpoint into a plain open_clip model with OpenAI's preprocessing."""
    import open_clip
    from open_clip.openai import load_openai_model

    model = load_openai_model(str(path), precision="fp32", device="cpu")
    config = open_clip.get_pretrained_cfg(model_name, "openai") or {}
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=config.get("mean", open_clip.OPENAI_DATASET_MEAN),
        std=config.get("std", open_clip.OPENAI_DATASET_STD),
        interpolation=config.get("interpolation", "bicubic"),
        resize_mode=config.get("resize_mode", "shortest"),
    )
    return model, preprocess


@dataclass
class FeatureResult:
    """Features of a list of images, in the list's order.

    Attributes:
        features: ``float32 [N, D]``, rows L2-normalised; NaN rows for unusable images.
        problems: ``position → reason`` for unusable images (corrupt, too small, size mismatch).
        hashes: sha256 of each file's bytes (None for a file that could not be read).
        computed: how many images went through the model in this run (the rest came from the cache).
    """

    features: np.ndarray
    problems: dict[int, str]
    hashes: list[str | None]
    computed: int = 0

    @property
    def usable(self) -> np.ndarray:
        """Positions of usable images, ascending."""
        return np.array([i for i in range(len(self.hashes)) if i not in self.problems], dtype=np.int64)


def _hash_file(item: SourceImage) -> tuple[str | None, str]:
    """``(sha256 of the file's bytes, "")``, or ``(None, reason)`` when the file cannot be read."""
    try:
        return bytes_sha256(item.read_bytes()), ""
    except (OSError, KeyError) as error:
        return None, f"cannot read ({error})"


CHANGED_WHILE_READ = "changed while the build read it"
"""The reason :class:`_DecodeDataset` gives for a file whose bytes no longer have the sha256 taken before: its
features would be cached under the old content's key, so the build stops instead."""


class _DecodeDataset:
    """Map-style dataset for DataLoader workers: position → (position, tensor or None, reason).

    ``hashes[position]`` is the sha256 the file had when it was hashed; the bytes decoded are checked against it."""

    def __init__(self, items: Sequence[SourceImage], hashes: Sequence[str | None], preprocess: Callable, min_side: int):
        self.items = items
        self.hashes = hashes
        self.preprocess = preprocess
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int):
        from PIL import Image

        item = self.items[position]
        try:
            data = item.read_bytes()
            if bytes_sha256(data) != self.hashes[position]:
                return position, None, CHANGED_WHILE_READ
            image = item.decode(data)
        except (MisatoError, OSError, KeyError) as error:
            return position, None, str(error) or "unreadable"
        height, width = image.shape[:2]
        if item.expected_size is not None and (height, width) != item.expected_size:
            return position, None, f"size {width}x{height} differs from the annotations' {item.expected_size[1]}x{item.expected_size[0]}"
        if min(height, width) < self.min_side:
            return position, None, f"too small ({width}x{height}, short side < {self.min_side})"
        return position, self.preprocess(Image.fromarray(image)), ""


def _collate(samples):
    return samples


FIXED_FORWARD_BYTES = 256 * 2**20
"""Memory of a first forward pass beyond its per-image activations (thread pools, packed weights; measured up to
~140 MB for ViT-L/14 on the CPU)."""
INPUT_COPIES = 6
"""Per image, copies of the network input alive at the peak (the batch, the patch embedding's unfolded input, …;
measured 3–6 for ViT-B/32, whose tokens are few, varying from run to run with the allocator)."""
TOKEN_ACTIVATIONS = 12
"""Per image, ``tokens × width`` float32 activations alive at a transformer block's peak (measured 8–10 on the CPU
for ViT-B/32, ViT-B/16 and ViT-L/14; kept above so the estimate errs on the large side)."""
CONV_ACTIVATIONS = 48
"""Per image, input-sized activations of a convolutional image tower (ResNet CLIP; a rough bound)."""


def feature_memory_bytes(encoder: ClipEncoder, batch_size: int, num_workers: int) -> int:
    """Estimated peak memory (bytes) of :func:`extract_features` beyond the loaded model.

    ``batch_size`` images at the forward's peak (``INPUT_COPIES`` copies of each ``3 × S × S`` float32 input plus,
    for a ViT, ``TOKEN_ACTIVATIONS × tokens × width`` floats), the batches the decode workers prefetch (2 each,
    DataLoader's default), and :data:`FIXED_FORWARD_BYTES`. Measured peaks are 0.5–0.9 × this estimate.
    """
    visual = encoder.model.visual
    height, width = (visual.image_size, visual.image_size) if isinstance(visual.image_size, int) else visual.image_size
    input_bytes = 3 * int(height) * int(width) * 4
    if hasattr(visual, "grid_size") and hasattr(visual, "transformer"):
        tokens = int(visual.grid_size[0]) * int(visual.grid_size[1]) + 1
        activations = TOKEN_ACTIVATIONS * tokens * int(visual.transformer.width) * 4
    else:
        activations = CONV_ACTIVATIONS * input_bytes
    per_image = INPUT_COPIES * input_bytes + activations
    prefetched = 2 * num_workers * batch_size * input_bytes
    return FIXED_FORWARD_BYTES + batch_size * per_image + prefetched


def extract_features(
    items: Sequence[SourceImage],
    encoder: ClipEncoder,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    min_side: int = 1,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    description: str = "CLIP features",
) -> FeatureResult:
    """CLIP features of ``items`` (see the module docstring for caching and sharding).

    Args:
        items: the images, in the order the result should have.
        encoder: from :func:`load_clip`.
        cache_dir: feature-cache root, or None for no cache.
        batch_size: images per forward pass.
        num_workers: DataLoader decode workers (0 = decode in this process).
        min_side: images whose shorter side is below this are unusable ("too small").
        on_batch: called with the number of images computed after every batch (tests use it to interrupt).
    Returns:
        A :class:`FeatureResult` for all items, identical on every rank.
    Raises:
        MisatoError: the batches would not fit in memory (:func:`feature_memory_bytes`, before any work).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    rank, world = rank_and_world()
    starts = range(0, len(items), batch_size)[rank::world]  # whole batches per rank: same batches as 1 process
    mine = [position for start in starts for position in range(start, min(start + batch_size, len(items)))]
    my_items = [items[position] for position in mine]
    cache = encoder.feature_cache(cache_dir, batch_size, f"r{rank}") if cache_dir is not None else None
    with ThreadPoolExecutor(max_workers=max(2, num_workers)) as pool:
        hashes, read_errors = zip(*pool.map(_hash_file, my_items)) if my_items else ((), ())
    known = {d: (cache.get(d), cache.reason(d)) for d in hashes if cache is not None and d in cache}
    batches = [list(range(start, min(start + batch_size, len(my_items)))) for start in range(0, len(my_items), batch_size)]
    todo = [batch for batch in batches if any(hashes[i] is not None and hashes[i] not in known for i in batch)]

    def record(digest: str, row: np.ndarray | None, reason: str) -> None:
        known[digest] = (row, reason)
        if cache is not None:
            cache.put(digest, row, reason)

    computed = 0
    if todo:
        check_memory(feature_memory_bytes(encoder, batch_size, num_workers),
                     f"CLIP {encoder.model_name} features with --batch-size {batch_size} and --workers {num_workers}")
        loader = DataLoader(
            _DecodeDataset(my_items, hashes, encoder.preprocess, min_side),
            batch_sampler=todo,
            num_workers=num_workers,
            collate_fn=_collate,
            generator=torch.Generator(),  # iterating draws a seed: not from the caller's random stream
        )
        bar = tqdm(total=sum(map(len, todo)), desc=description, unit="img", disable=not progress or rank != 0)
        with bar, cache if cache is not None else contextlib.nullcontext():  # flushed even when interrupted
            for samples in loader:
                good = [(position, tensor) for position, tensor, _ in samples if tensor is not None]
                for position, tensor, reason in samples:
                    if reason == CHANGED_WHILE_READ:
                        item = my_items[position]
                        raise MisatoError(f"{item.root / item.relative_path}: {CHANGED_WHILE_READ} (its bytes differ "
                                          "from those hashed a moment before); run the build again")
                    if tensor is None and hashes[position] is not None:
                        record(hashes[position], None, reason)
                if good:
                    batch = torch.stack([tensor for _, tensor in good]).to(encoder.device, torch.float32)
                    with torch.inference_mode():
                        output = torch.nn.functional.normalize(encoder.model.encode_image(batch).float(), dim=-1)
                    for (position, _), row in zip(good, output.cpu().numpy().astype(np.float32)):
                        record(hashes[position], row, "")
                computed += len(samples)
                bar.update(len(samples))
                if on_batch is not None:
                    on_batch(computed)
    dim = next((len(row) for row, _ in known.values() if row is not None), None) or encoder.model.visual.output_dim
    local = np.full((len(my_items), int(dim)), np.nan, dtype=np.float32)
    local_problems: dict[int, str] = {}
    for index, digest in enumerate(hashes):
        if digest is None:
            local_problems[mine[index]] = read_errors[index]
            continue
        row, reason = known[digest]
        if row is None:
            local_problems[mine[index]] = reason
        else:
            local[index] = row
    return _gather(len(items), mine, local, local_problems, list(hashes), computed)


def _gather(total: int, mine: list[int], local: np.ndarray, problems: dict[int, str], hashes: list[str], computed: int) -> FeatureResult:
    """Combine every rank's share into the original order (no-op for a single process)."""
    shares = all_gather_objects((mine, local, problems, hashes, computed))
    features = np.full((total, local.shape[1]), np.nan, dtype=np.float32)
    all_problems: dict[int, str] = {}
    all_hashes = [""] * total
    for positions, rows, share_problems, share_hashes, _ in shares:
        features[positions] = rows
        all_problems.update(share_problems)
        for position, digest in zip(positions, share_hashes):
            all_hashes[position] = digest
    return FeatureResult(features, dict(sorted(all_problems.items())), all_hashes, sum(s[4] for s in shares))
