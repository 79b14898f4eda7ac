"""Loading a MISATO folder (our builds or the official release) as a torch Dataset or a Hugging Face Dataset.

Pairs are opened with :func:`misato.layout.open_pairs` (sorted names; the 1024 release's ``00``-prefixed mask
names are accepted; domains from ``manifest.csv`` when present, else from the released index ranges).
"""
from __future__ import annotations

import os

import numpy as np

from misato.io import read_image, read_mask
from misato.layout import open_pairs


class MisatoDataset:
    """A torch-style map dataset over a MISATO folder.

    Each item is a dict:

    - ``image``: ``torch.uint8 [3, H, W]`` (0–255), or ``torch.float32 [3, H, W]`` in [0, 1] with ``as_float=True``;
    - ``mask``: ``torch.bool [1, H, W]``, True = hole;
    - ``name``: the file stem (``"0612"``);
    - ``domain``: ``landscape``/``indoor``/``building``/``background`` or a custom domain from the manifest.

    Args:
        root: a MISATO root holding ``image/`` and ``mask/``.
        as_float: return images as float in [0, 1] instead of uint8.
    """

    def __init__(self, root: str | os.PathLike, as_float: bool = False):
        self.pairs = open_pairs(root)
        self.as_float = as_float

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        return list(self.pairs.names)

    def __getitem__(self, index: int) -> dict:
        import torch

        name = self.pairs.names[index]
        image = torch.from_numpy(np.ascontiguousarray(read_image(self.pairs.images[name]).transpose(2, 0, 1)))
        if self.as_float:
            image = image.float() / 255.0
        mask = torch.from_numpy(read_mask(self.pairs.masks[name]))[None]
        return {"image": image, "mask": mask, "name": name, "domain": self.pairs.domains[name]}


def to_hf_dataset(root: str | os.PathLike):
    """A Hugging Face ``datasets.Dataset`` with columns ``image`` (Image), ``mask`` (Image, 255 = hole),
    ``name`` and ``domain`` (strings), in sorted name order. Images are referenced by path and decoded lazily
    by ``datasets`` (as PIL images)."""
    import datasets

    pairs = open_pairs(root)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "name": datasets.Value("string"),
            "domain": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [str(pairs.images[n]) for n in pairs.names],
            "mask": [str(pairs.masks[n]) for n in pairs.names],
            "name": list(pairs.names),
            "domain": [pairs.domains[n] for n in pairs.names],
        },
        features=features,
    )
