"""MisatoDataset (torch) and to_hf_dataset (Hugging Face) on our layout and the official release layouts."""
from __future__ import annotations

import numpy as np
import pytest

from misato.dataset import MisatoDataset, to_hf_dataset
from misato.errors import MisatoError
from misato.io import read_image, read_mask, write_mask
from tests.helpers import write_misato_folder


def test_torch_dataset_items(tmp_path):
    root = write_misato_folder(tmp_path / "m", names=["0000", "0499", "0500", "1999"], size=24)
    (root / "manifest.csv").write_text("name,domain\n0000,landscape\n0499,landscape\n0500,indoor\n1999,mine\n")
    data = MisatoDataset(root)
    assert len(data) == 4 and data.names == ["0000", "0499", "0500", "1999"]
    item = data[2]
    assert item["name"] == "0500" and item["domain"] == "indoor"
    assert item["image"].dtype.is_floating_point is False and tuple(item["image"].shape) == (3, 24, 24)
    assert np.array_equal(item["image"].numpy().transpose(1, 2, 0), read_image(root / "image" / "0500.png"))
    assert str(item["mask"].dtype) == "torch.bool" and tuple(item["mask"].shape) == (1, 24, 24)
    assert np.array_equal(item["mask"][0].numpy(), read_mask(root / "mask" / "0500.png"))
    assert data[3]["domain"] == "mine"
    as_float = MisatoDataset(root, as_float=True)[0]["image"]
    assert as_float.dtype.is_floating_point and float(as_float.max()) <= 1.0
    assert np.allclose(as_float.numpy() * 255, data[0]["image"].numpy())


def test_torch_dataset_in_a_dataloader(tmp_path):
    import torch

    root = write_misato_folder(tmp_path / "m", n=5, size=16)
    batch = next(iter(torch.utils.data.DataLoader(MisatoDataset(root), batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 3, 16, 16) and batch["name"] == ["0000", "0001", "0002", "0003"]
    assert batch["domain"] == ["landscape"] * 4


def test_release_1024_layout_with_00_mask_prefix(tmp_path):
    root = write_misato_folder(tmp_path / "r", names=["0000", "1000"], size=16)
    for name in ("0000", "1000"):
        mask = read_mask(root / "mask" / f"{name}.png")
        (root / "mask" / f"{name}.png").unlink()
        write_mask(root / "mask" / f"00{name}.png", mask)
    data = MisatoDataset(root)
    assert data.names == ["0000", "1000"] and data[1]["domain"] == "building"
    hf = to_hf_dataset(root)
    assert hf["name"] == ["0000", "1000"] and hf["domain"] == ["landscape", "building"]


def test_hf_dataset_columns_and_values(tmp_path):
    import datasets

    root = write_misato_folder(tmp_path / "m", n=3, size=16)
    hf = to_hf_dataset(root)
    assert isinstance(hf.features["image"], datasets.Image) and isinstance(hf.features["mask"], datasets.Image)
    row = hf[1]
    assert row["name"] == "0001" and row["domain"] == "landscape"
    assert np.array_equal(np.asarray(row["image"]), read_image(root / "image" / "0001.png"))
    assert np.array_equal(np.asarray(row["mask"]) >= 128, read_mask(root / "mask" / "0001.png"))


def test_missing_masks_are_an_error(tmp_path):
    root = write_misato_folder(tmp_path / "m", n=2, size=16)
    (root / "mask" / "0001.png").unlink()
    with pytest.raises(MisatoError, match="without a mask"):
        MisatoDataset(root)
