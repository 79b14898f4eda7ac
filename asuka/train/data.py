"""Training data: image sources, random crops with on-the-fly masks, and a resumable, seeded batch stream.

Determinism. Everything random about one training sample — which image, its crop, its mask, and the noise the
stage draws for it — is a function of ``(seed, position)``, where ``position`` counts samples in the global stream
(all processes together). Epoch ``e`` visits the images in the permutation ``default_rng([seed, e, 7])``; stream
position ``p`` is image ``perm_{p // N}[p % N]``, cropped and masked with ``default_rng([seed, p, salt])``, and its
stage seed (:data:`Sample` ``seed``) is ``SeedSequence([seed, p, 1])``'s first 63 bits. So the data order does not
depend on the number of workers, a run resumes at any step by starting the stream at that position, and a
micro-batch of ``B`` images on each of ``W`` processes holds exactly the samples of one process with ``B·W``.

A batch (after :func:`collate`) is a dict: ``image`` float32 ``[B, 3, S, S]`` in [0, 1]; ``mask`` float32
``[B, 1, S, S]`` in {0, 1} (1 = hole); ``seed`` int64 ``[B]`` (per-sample seeds for the stage's noise, see
:func:`sample_generators`); ``position`` int64 ``[B]``; ``skipped`` int (corrupt files skipped while loading it);
``error`` str or None (a user error found in a worker, raised by the loop as one line).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from misato.errors import MisatoError
from misato.io import IMAGE_SUFFIXES, decode_image, list_images

TRAIN_SALT = 0
VALIDATION_SALT = 2
HF_PREFIX = "hf:"


# --------------------------------------------------------------------------------------------------- sources


class ImageSource(ABC):
    """A fixed, ordered collection of training images."""

    description: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as ``uint8 [H, W, 3]``; :class:`MisatoError` when it cannot be decoded."""

    @abstractmethod
    def label(self, index: int) -> str:
        """How messages name image ``index``."""

    @abstractmethod
    def digest(self) -> str:
        """sha256 identifying the collection (file list and sizes, or the dataset's fingerprint)."""


class FolderSource(ImageSource):
    """Image files under a folder, found recursively (``.png``/``.jpg``/``.jpeg``, hidden entries skipped), in
    sorted relative-path order; or a MISATO build's ``image/`` folder."""

    def __init__(self, root: Path, files: list[Path], description: str):
        self.root, self.files, self.description = root, files, description

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            data = path.read_bytes()
        except OSError as error:
            raise MisatoError(f"{path}: cannot read ({error.strerror or error})") from None
        return decode_image(data, str(path))

    def label(self, index: int) -> str:
        return str(self.files[index])

    def digest(self) -> str:
        lines = []
        for path in self.files:
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            lines.append(f"{path.relative_to(self.root).as_posix()}\t{size}\n")
        return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


class HFSource(ImageSource):
    """A Hugging Face ``datasets`` dataset; images from one ``Image`` column (decoded as PIL by ``datasets``)."""

    def __init__(self, dataset: Any, column: str | None, description: str):
        import datasets

        images = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
        if column is None:
            if not images:
                raise MisatoError(f"{description}: no Image column (columns: {', '.join(dataset.column_names)})")
            column = images[0]
        elif column not in dataset.column_names:
            raise MisatoError(f"--image-column {column}: not a column of {description} "
                              f"({', '.join(dataset.column_names)})")
        if len(dataset) == 0:
            raise MisatoError(f"{description} holds no images")
        self.dataset, self.column, self.description = dataset, column, description

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> np.ndarray:
        try:
            image = self.dataset[int(index)][self.column]
        except Exception as error:  # noqa: BLE001 - datasets/PIL raise many types for undecodable rows
            raise MisatoError(f"{self.label(index)}: cannot decode ({error})") from None
        if not isinstance(image, Image.Image):
            raise MisatoError(f"{self.label(index)}: column {self.column} holds {type(image).__name__}, not an image")
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()

    def label(self, index: int) -> str:
        return f"{self.description} row {index}"

    def digest(self) -> str:
        fingerprint = getattr(self.dataset, "_fingerprint", None) or repr(self.dataset)
        return hashlib.sha256(f"{fingerprint}\t{self.column}\t{len(self)}".encode()).hexdigest()


def _scan(root: Path) -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        files.extend(Path(folder) / name for name in sorted(names)
                     if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


@contextlib.contextmanager
def hub_offline_mode():
    """Put ``datasets`` and ``huggingface_hub`` in their offline mode for the block (they read ``HF_HUB_OFFLINE``
    once, at import, so ``MISATO_OFFLINE`` set alone would leave them retrying the network)."""
    import datasets
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def load_hub_dataset(name: str, split: str):
    """``datasets.load_dataset(name, split=split)``; offline (:func:`misato.weights.is_offline`) only a copy in
    the Hugging Face cache is used, and a dataset missing from it fails at once.

    Raises:
        MisatoError: naming ``--data hf:NAME`` (offline and not cached, or any hub, split or config error).
    """
    import datasets

    from misato.weights import OFFLINE_ENVS, is_offline

    from misato.quiet import LIBRARY_LOGGERS, quiet_loading

    offline = is_offline()
    try:  # quietly: an unreachable hub is retried with a log line each time, before our one line
        with hub_offline_mode() if offline else contextlib.nullcontext(), quiet_loading((*LIBRARY_LOGGERS, "datasets")):
            return datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - hub, offline and config errors
        if offline and isinstance(error, (ConnectionError, FileNotFoundError)):
            raise MisatoError(f"--data {HF_PREFIX}{name}: not in the Hugging Face cache, and downloads are off "
                              f"({' / '.join(OFFLINE_ENVS)} is set); save it with save_to_disk and pass its folder, "
                              "or go online") from None
        raise MisatoError(f"--data {HF_PREFIX}{name}: cannot load the Hugging Face dataset "
                          f"({str(error).splitlines()[0]})") from None


def open_source(spec: str | os.PathLike | Any, split: str = "train", image_column: str | None = None) -> ImageSource:
    """The images named by ``--data``: a ``datasets.Dataset`` object, ``hf:NAME`` (``datasets.load_dataset``),
    a saved dataset folder (``datasets.load_from_disk``), a MISATO build (``image/`` beside ``mask/``), or any
    folder of images (recursive).

    Raises:
        MisatoError: nothing there, or no images in it.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return HFSource(spec, image_column, "the given dataset")
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return HFSource(load_hub_dataset(text[len(HF_PREFIX):], split), image_column, f"--data {text}")
    root = Path(text).expanduser()
    if not root.is_dir():
        raise MisatoError(f"--data {root}: no such folder")
    if (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file():
        import datasets

        dataset = datasets.load_from_disk(str(root))
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise MisatoError(f"--data {root}: no split {split!r} (splits: {', '.join(dataset)})")
            dataset = dataset[split]
        return HFSource(dataset, image_column, f"--data {root}")
    if (root / "image").is_dir() and (root / "mask").is_dir():
        images = list_images(root / "image")
        return FolderSource(root / "image", [images[name] for name in sorted(images)], f"MISATO build {root}")
    files = _scan(root)
    if not files:
        raise MisatoError(f"--data {root}: no .png/.jpg/.jpeg images in it or below it")
    return FolderSource(root, files, f"folder {root}")


# --------------------------------------------------------------------------------------------------- samples


class TooSmall(Exception):
    """An image smaller than the crop (a user error reported by the loop, not skipped)."""


def random_square(image: np.ndarray, size: int, rng: np.random.Generator, crop: str = "resize",
                  small: str = "error", label: str = "image") -> np.ndarray:
    """A random ``size × size`` square of ``image`` (``uint8 [H, W, 3]``) → ``uint8 [size, size, 3]``.

    ``crop="resize"`` scales the short side to ``size`` (Pillow bicubic, antialiased when shrinking) and cuts a
    random square along the long side; ``crop="random"`` cuts a random square at the image's own scale, and an
    image whose short side is below ``size`` is refused (``small="error"``, :class:`TooSmall`) or scaled up
    (``small="resize"``).
    """
    height, width = image.shape[:2]
    short = min(height, width)
    if crop == "resize" or (short < size and small == "resize"):
        scale = size / short
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        if new != (width, height):
            image = np.asarray(Image.fromarray(image).resize(new, Image.Resampling.BICUBIC), dtype=np.uint8)
        height, width = image.shape[:2]
    elif short < size:
        raise TooSmall(f"{label} is {width}x{height}, smaller than the {size}px crop; pass --small-images resize, "
                       "--crop resize or a smaller --resolution")
    top = int(rng.integers(height - size + 1))
    left = int(rng.integers(width - size + 1))
    return image[top : top + size, left : left + size].copy()


def sample_seed(seed: int, position: int) -> int:
    """The per-sample seed (63 bits) a stage draws that sample's noise from."""
    return int(np.random.SeedSequence([seed, position, 1]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_generators(seeds: torch.Tensor, salt: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per sample, seeded from its seed and ``salt`` (a different salt for each random
    quantity a stage draws, so adding one does not shift another)."""
    return [torch.Generator(device).manual_seed((int(s) * 1000003 + salt) % (2 ** 63)) for s in seeds.tolist()]


def per_sample_rand(seeds: torch.Tensor, salt: int, shape: tuple[int, ...] = (), **kwargs) -> torch.Tensor:
    """``[B, *shape]`` uniform [0, 1) values, sample ``b`` drawn only from its own seed (and ``salt``)."""
    return torch.stack([torch.rand(shape, generator=g) for g in sample_generators(seeds, salt)]).to(**kwargs)


def per_sample_randn(seeds: torch.Tensor, salt: int, shape: tuple[int, ...], **kwargs) -> torch.Tensor:
    """``[B, *shape]`` standard normal values drawn per sample (see :func:`per_sample_rand`)."""
    return torch.stack([torch.randn(shape, generator=g) for g in sample_generators(seeds, salt)]).to(**kwargs)


def per_sample_randint(seeds: torch.Tensor, salt: int, high: int, **kwargs) -> torch.Tensor:
    """``[B]`` integers in ``[0, high)`` drawn per sample."""
    return torch.stack([torch.randint(high, (), generator=g) for g in sample_generators(seeds, salt)]).to(**kwargs)


class TrainingImages(torch.utils.data.Dataset):
    """Map-style dataset over keys ``(position, salt)``: the sample at that stream position (module docstring).

    Args:
        source: the images.
        resolution: crop side ``S``.
        seed: the run's seed.
        masks: a :class:`misato.masks.MaskGenerator` at ``resolution`` (None: all-zero masks).
        crop, small: see :func:`random_square`.
    """

    def __init__(self, source: ImageSource, resolution: int, seed: int, masks=None, crop: str = "resize",
                 small: str = "error"):
        self.source, self.resolution, self.seed, self.masks = source, resolution, seed, masks
        self.crop, self.small = crop, small
        self._epoch, self._order = -1, None

    def __len__(self) -> int:
        return len(self.source)

    def index_at(self, position: int) -> int:
        """The image index at a stream position (epoch permutations, cached per epoch)."""
        epoch, offset = divmod(position, len(self.source))
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.source))
            self._epoch = epoch
        return int(self._order[offset])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        position, salt = key
        rng = np.random.default_rng([self.seed, position, salt])
        index = self.index_at(position) if salt == TRAIN_SALT else position % len(self.source)
        skipped, error = 0, None
        for attempt in range(len(self.source)):
            current = (index + attempt) % len(self.source)
            try:
                image = self.source.load(current)
                pixels = random_square(image, self.resolution, rng, self.crop, self.small, self.source.label(current))
                break
            except MisatoError:  # corrupt or unreadable: skipped and counted
                skipped += 1
            except TooSmall as problem:
                error, pixels = str(problem), np.zeros((self.resolution, self.resolution, 3), np.uint8)
                break
        else:
            raise MisatoError(f"{self.source.description}: every image failed to decode")
        if self.masks is None:
            mask = np.zeros((self.resolution, self.resolution), bool)
        else:
            mask, _ = self.masks.sample(rng)
        return {
            "image": torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0,
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "seed": sample_seed(self.seed, position) if salt == TRAIN_SALT else sample_seed(self.seed + 1, position),
            "position": position, "skipped": skipped, "error": error,
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (module docstring)."""
    errors = [sample["error"] for sample in samples if sample["error"] is not None]
    return {
        "image": torch.stack([sample["image"] for sample in samples]),
        "mask": torch.stack([sample["mask"] for sample in samples]),
        "seed": torch.tensor([sample["seed"] for sample in samples], dtype=torch.int64),
        "position": torch.tensor([sample["position"] for sample in samples], dtype=torch.int64),
        "skipped": sum(sample["skipped"] for sample in samples),
        "error": errors[0] if errors else None,
    }


class StreamBatches(torch.utils.data.Sampler):
    """Infinite per-process micro-batches of dataset keys, starting at global micro-batch ``start``.

    Global micro-batch ``g`` covers stream positions ``[g·B·W, (g + 1)·B·W)``; process ``rank`` takes the
    ``B`` positions from ``g·B·W + rank·B``.
    """

    def __init__(self, batch_size: int, rank: int = 0, world: int = 1, start: int = 0):
        self.batch_size, self.rank, self.world, self.start = batch_size, rank, world, start

    def __iter__(self):
        group = self.start
        while True:
            base = (group * self.world + self.rank) * self.batch_size
            yield [(position, TRAIN_SALT) for position in range(base, base + self.batch_size)]
            group += 1


def make_loader(dataset: TrainingImages, batch_size: int, start: int, rank: int, world: int, num_workers: int,
                seed: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over :class:`StreamBatches` from micro-batch ``start``. Its ``generator`` (seeded; only
    the workers' base seed is drawn from it) keeps the loader off torch's global random stream."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StreamBatches(batch_size, rank, world, start), num_workers=num_workers,
        collate_fn=collate, generator=generator, pin_memory=pin_memory, persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None)


def validation_batch(dataset: TrainingImages, count: int) -> dict[str, Any]:
    """A fixed batch (the first ``count`` images, their own crops and masks) for the validation grids."""
    return collate([dataset[(position, VALIDATION_SALT)] for position in range(count)])
