"""asuka.train.config and asuka.train.data: config files, sources, crops, corrupt/small images, the seeded stream."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asuka.train import config as train_config
from asuka.train import data as train_data
from asuka.train.loop import stage_parser
from asuka.train.mae import MAEStage
from misato.errors import MisatoError
from misato.io import write_image
from tests.asuka.train.conftest import write_images
from tests.helpers import smooth_image, write_misato_folder


def test_config_file_sets_flags_and_command_line_wins(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch-size: 3\nlr: 0.5\nadam_betas: [0.8, 0.9]\nnorm-pix-loss: false\ndata: imgs\nout: o\n")
    args = train_config.parse_arguments(stage_parser(MAEStage), ["--config", str(path), "--lr", "0.25"])
    assert (args.batch_size, args.lr, args.adam_betas, args.norm_pix_loss) == (3, 0.25, [0.8, 0.9], False)
    config = train_config.resolved_config(args)
    assert "out" not in config and "config" not in config and config["data"] == "imgs"
    (tmp_path / "run.json").write_text(json.dumps({"data": "d", "out": "o", "resolution": 128}))
    parsed = train_config.parse_arguments(stage_parser(MAEStage), ["--config", str(tmp_path / "run.json")])
    assert parsed.resolution == 128


@pytest.mark.parametrize("text, match", [
    ("nonsense-key: 1\n", "unknown key 'nonsense-key'"),
    ("min-masked-ratio: 1.5\n", "min-masked-ratio: must be a probability"),
    ("batch-size: [1, 2]\n", "batch-size"),
    ("- a list\n", "expected a mapping"),
])
def test_bad_config_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MisatoError, match=match):
        train_config.parse_arguments(stage_parser(MAEStage), ["--config", str(path), "--data", "d", "--out", "o"])


def test_required_and_out_of_range_flags():
    parser = stage_parser(MAEStage)
    with pytest.raises(MisatoError, match="--data and --out required"):
        train_config.parse_arguments(parser, [])
    with pytest.raises(MisatoError, match="probability in"):
        train_config.parse_arguments(stage_parser(MAEStage), ["--data", "d", "--out", "o", "--min-masked-ratio",
                                                              "-0.1"])
    with pytest.raises(MisatoError, match="--mask-ratio"):
        train_config.parse_arguments(stage_parser(MAEStage), ["--data", "d", "--out", "o", "--mask-ratio", "0.6",
                                                              "0.2"])


def test_differing_keys_named():
    assert train_config.differing_keys({"lr": 1.0, "seed": 0, "log_every": 1},
                                       {"lr": 2.0, "seed": 0, "log_every": 5}) == ["lr (1.0 → 2.0)"]


def test_sources(tmp_path):
    nested = train_data.open_source(write_images(tmp_path / "places", n=4))
    assert len(nested) == 4 and all("/a/class" in nested.label(i) for i in range(4))
    odd = next(i for i in range(4) if "class1" in nested.label(i))
    assert nested.load(odd).shape == (72, 66, 3)
    misato = train_data.open_source(write_misato_folder(tmp_path / "misato", n=3))
    assert len(misato) == 3 and all("/image/" in misato.label(i) for i in range(3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="no .png/.jpg/.jpeg images"):
        train_data.open_source(tmp_path / "empty")
    with pytest.raises(MisatoError, match="no such folder"):
        train_data.open_source(tmp_path / "missing")


def test_hugging_face_dataset_folder(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(smooth_image(rng, 40)) for _ in range(3)]
    dataset = datasets.Dataset.from_dict({"label": [0, 1, 2], "picture": images},
                                         features=datasets.Features({"label": datasets.Value("int32"),
                                                                     "picture": datasets.Image()}))
    dataset.save_to_disk(str(tmp_path / "hf"))
    source = train_data.open_source(tmp_path / "hf")
    assert len(source) == 3 and source.column == "picture"
    np.testing.assert_array_equal(source.load(2), np.asarray(images[2]))
    with pytest.raises(MisatoError, match="--image-column nope: not a column"):
        train_data.open_source(tmp_path / "hf", image_column="nope").load(0)


def test_corrupt_images_skipped_and_counted_small_images_refused(tmp_path):
    root = write_images(tmp_path / "images", n=3)
    (root / "a" / "class0" / "broken.png").write_bytes(b"not a png")
    source = train_data.open_source(root)
    dataset = train_data.TrainingImages(source, 32, seed=0)
    broken = next(i for i in range(len(source)) if source.label(i).endswith("broken.png"))
    position = next(p for p in range(40) if dataset.index_at(p) == broken)
    sample = dataset[(position, train_data.TRAIN_SALT)]
    assert sample["skipped"] == 1 and sample["error"] is None and sample["image"].shape == (3, 32, 32)
    small = train_data.TrainingImages(source, 100, seed=0, crop="random")
    assert "smaller than the 100px crop" in small[(0, 0)]["error"]
    upscaled = train_data.TrainingImages(source, 100, seed=0, crop="random", small="resize")
    assert upscaled[(0, 0)]["error"] is None and upscaled[(0, 0)]["image"].shape == (3, 100, 100)


def test_random_square_is_a_crop_of_the_image():
    rng = np.random.default_rng(0)
    image = smooth_image(rng, 50)
    square = train_data.random_square(image, 20, np.random.default_rng(1), crop="random")
    found = [(y, x) for y in range(31) for x in range(31) if np.array_equal(image[y : y + 20, x : x + 20], square)]
    assert len(found) == 1


def test_stream_two_ranks_equal_one_rank_with_double_batch():
    single = iter(train_data.StreamBatches(4, start=3))
    ranks = [iter(train_data.StreamBatches(2, rank=r, world=2, start=3)) for r in range(2)]
    for _ in range(3):
        assert next(single) == next(ranks[0]) + next(ranks[1])


def test_loader_order_independent_of_workers_and_resumable(tmp_path):
    source = train_data.open_source(write_images(tmp_path / "images", n=5))
    dataset = train_data.TrainingImages(source, 32, seed=4)

    def batches(workers, start, count):
        loader = train_data.make_loader(dataset, 2, start, 0, 1, workers, seed=4)
        stream = iter(loader)
        return [next(stream) for _ in range(count)]

    plain, workers = batches(0, 0, 4), batches(2, 0, 4)
    resumed = batches(0, 2, 2)
    for a, b in zip(plain, workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["seed"], b["seed"])
    for a, b in zip(plain[2:], resumed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["position"], b["position"])
    positions = torch.cat([b["position"] for b in plain]).tolist()
    assert positions == list(range(8))
    first_epoch = [dataset.index_at(p) for p in range(5)]
    assert sorted(first_epoch) == list(range(5))


def test_per_sample_draws_depend_only_on_the_sample_seed():
    seeds = torch.tensor([5, 9, 5])
    values = train_data.per_sample_randn(seeds, 1, (3,))
    assert torch.equal(values[0], values[2]) and not torch.equal(values[0], values[1])
    assert torch.equal(train_data.per_sample_randn(seeds[1:2], 1, (3,))[0], values[1])
    assert not torch.equal(train_data.per_sample_randn(seeds, 2, (3,)), values)
