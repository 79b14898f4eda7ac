"""``generate_masks`` / ``misato masks`` files, determinism, resume, and ``mask_stats`` / ``misato mask-stats``."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label

from misato.cli import main
from misato.errors import MisatoError
from misato.io import write_mask
from misato.masks import generate_masks, make_generator, mask_rng, mask_stats


def file_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_files_polarity_index_and_parameters(tmp_path):
    out = tmp_path / "m"
    csv_path = generate_masks("lama-thick-256", 6, 128, 4, out, progress=False)
    assert csv_path == out / "masks.csv"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(6)]
    gen = make_generator("lama-thick-256", 128)
    rows = list(csv.DictReader(open(csv_path)))
    for i, row in enumerate(rows):
        raw = np.asarray(Image.open(out / f"{i:05d}.png"))
        assert raw.dtype == np.uint8 and raw.ndim == 2 and set(np.unique(raw)) <= {0, 255}
        expected, kinds = gen.sample(mask_rng(4, i))
        assert np.array_equal(raw == 255, expected)  # 255 on disk = True in memory = hole
        assert row == {"name": f"{i:05d}", "kinds": "+".join(kinds), "hole_ratio": f"{expected.mean():.6f}",
                       "seed": "4", "index": str(i)}
    params = json.loads((out / "masks.json").read_text())
    assert params["preset"] == "lama-thick-256" and params["complete"] and params["n"] == 6
    assert params["generator"]["ratio_range"] == [0.0, 0.5] and params["generator"]["max_width"] == 100


def test_same_seed_identical_bytes_independent_of_n_and_different_seed_differs(tmp_path):
    generate_masks("comod-512", 5, 64, 11, tmp_path / "a", progress=False)
    generate_masks("comod-512", 8, 64, 11, tmp_path / "b", progress=False)
    generate_masks("comod-512", 5, 64, 12, tmp_path / "c", progress=False)
    a, b, c = (file_bytes(tmp_path / x) for x in "abc")
    assert a == {name: b[name] for name in a}
    assert all(a[name] != c[name] for name in a)


def test_resume_overwrite_and_refusal(tmp_path):
    out = tmp_path / "m"
    generate_masks("rect", 6, 64, 0, out, progress=False)
    reference = file_bytes(out)
    with pytest.raises(MisatoError, match="not empty"):
        generate_masks("rect", 6, 64, 0, out, progress=False)
    (out / "00002.png").unlink()
    (out / "masks.csv").unlink()
    generate_masks("rect", 6, 64, 0, out, resume=True, progress=False)
    assert file_bytes(out) == reference and (out / "masks.csv").is_file()
    with pytest.raises(MisatoError, match="different seed"):
        generate_masks("rect", 6, 64, 1, out, resume=True, progress=False)
    with pytest.raises(MisatoError, match="different generator"):
        generate_masks("rect", 6, 64, 0, out, ratio_range=(0.1, 0.9), resume=True, progress=False)
    write_mask(out / "00003.png", np.ones((64, 64), bool))  # a foreign file in a resumed folder
    with pytest.raises(MisatoError, match="00003.png differs"):
        generate_masks("rect", 6, 64, 0, out, resume=True, progress=False)
    generate_masks("rect", 3, 64, 5, out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    with pytest.raises(MisatoError, match="either"):
        generate_masks("rect", 3, 64, 5, out, overwrite=True, resume=True, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(MisatoError, match="not empty and holds no masks.json"):
        generate_masks("rect", 3, 64, 5, other, resume=True, progress=False)
    with pytest.raises(MisatoError, match="not empty and holds no masks.json"):
        generate_masks("rect", 3, 64, 5, other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(MisatoError, match="at least 1"):
        generate_masks("rect", 0, 64, 5, tmp_path / "zero", progress=False)


def test_mask_stats_against_hand_values(tmp_path):
    folder = tmp_path / "release_masks"
    masks = []
    for k in range(4):  # k + 1 separate squares of 8 x 8 on a 32 x 32 canvas, plus one half-full mask
        mask = np.zeros((32, 32), bool)
        for j in range(k + 1):
            mask[2 + 10 * (j // 2) : 10 + 10 * (j // 2), 2 + 12 * (j % 2) : 10 + 12 * (j % 2)] = True
        masks.append(mask)
    half = np.zeros((32, 32), bool)
    half[:, :16] = True
    masks.append(half)
    for i, mask in enumerate(masks):
        write_mask(folder / f"{i:04d}.png", mask)
    stats = mask_stats(folder)
    ratios = np.array([m.mean() for m in masks])  # 1/16, 2/16, 3/16, 4/16, 8/16
    components = np.array([label(m, connectivity=2).max() for m in masks])
    assert stats["all"]["count"] == 5 and stats["per_kind"] == {}
    assert stats["all"]["ratio_mean"] == pytest.approx(ratios.mean())
    assert stats["all"]["ratio_quantiles"]["q50"] == pytest.approx(np.median(ratios))
    assert stats["all"]["components_mean"] == pytest.approx(components.mean()) == pytest.approx(11 / 5)
    assert list(stats["all"]["ratio_histogram"].values()) == [1, 2, 1, 0, 0, 1, 0, 0, 0, 0]


def test_mask_stats_per_kind_and_cli(tmp_path, capsys):
    out = tmp_path / "m"
    objects = tmp_path / "objects"
    write_mask(objects / "o.png", np.hypot(*np.mgrid[-32:32, -32:32]) < 16)
    assert main(["masks", "--preset", "misato", "--n", "30", "--size", "64", "--seed", "3", "--out", str(out),
                 "--objects", str(objects)]) == 0
    stats = mask_stats(out)
    rows = list(csv.DictReader(open(out / "masks.csv")))
    kinds = {row["kinds"] for row in rows}
    assert set(stats["per_kind"]) == kinds and sum(s["count"] for s in stats["per_kind"].values()) == 30
    for kind, summary in stats["per_kind"].items():
        chosen = [float(row["hole_ratio"]) for row in rows if row["kinds"] == kind]
        assert summary["ratio_mean"] == pytest.approx(np.mean(chosen), abs=1e-6)
    capsys.readouterr()
    assert main(["mask-stats", str(out), "--out", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "q50" in printed and "object" in printed
    assert json.loads((tmp_path / "s.json").read_text())["all"]["count"] == 30
    assert main(["mask-stats", str(out), "--out", str(tmp_path / "s.csv")]) == 0
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert table[0]["group"] == "all" and int(table[0]["count"]) == 30 and len(table) == 1 + len(kinds)
    assert main(["mask-stats", str(out), "--out", str(tmp_path / "s.txt")]) == 2
    (out / "masks.csv").write_text("".join(open(out / "masks.csv").readlines()[:3]))  # lists 2 of the 30
    with pytest.warns(UserWarning, match=r"masks.csv does not list 28 of the 30 masks .*per-kind statistics are left out"):
        assert mask_stats(out)["per_kind"] == {}


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["masks", "--preset", "nope", "--n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "lama-thin-512" in capsys.readouterr().err
    assert main(["masks", "--preset", "object", "--n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--objects" in capsys.readouterr().err
    assert main(["masks", "--preset", "rect", "--n", "2", "--out", str(tmp_path / "x"), "--ratio-range", "0.6", "0.2"]) == 2
    assert main(["mask-stats", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        main(["masks", "--preset", "rect", "--n", "2", "--out", str(tmp_path / "x"), "--resume", "--overwrite"])


def test_ctrl_c_just_after_a_temporary_file_is_made_leaves_none_and_resume_completes(tmp_path, monkeypatch):
    """Ctrl-C raises ``KeyboardInterrupt`` between any two bytecodes of the main thread: also just after the
    temporary file of an atomic write was created, before the write holds its name (where ``tempfile.mkstemp``
    left it behind in 2 of 9 real Ctrl-C runs). The interrupted command exits 130, leaves no hidden ``.tmp`` file,
    and ``--resume`` completes the folder to the bytes of an uninterrupted run."""
    import os
    from pathlib import Path

    argv = ["masks", "--preset", "rect", "--n", "6", "--size", "32", "--seed", "3"]
    reference, out = tmp_path / "reference", tmp_path / "m"
    assert main([*argv, "--out", str(reference)]) == 0
    real_open = os.open
    created = []

    def open_then_interrupt(path, flags, *args, **kwargs):
        handle = real_open(path, flags, *args, **kwargs)
        if Path(path).parent == out and Path(path).name.endswith(".tmp") and ".png." in Path(path).name:
            created.append(Path(path))
            if len(created) == 3:
                os.close(handle)
                raise KeyboardInterrupt
        return handle

    monkeypatch.setattr(os, "open", open_then_interrupt)
    assert main([*argv, "--out", str(out)]) == 130
    monkeypatch.undo()
    assert created[-1].name.startswith(".00002.png.")
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert file_bytes(out) == file_bytes(reference)
    assert (out / "masks.csv").read_bytes() == (reference / "masks.csv").read_bytes()


def test_the_presets_offered_without_objects_are_those_needing_no_object_source():
    from misato.cli_choices import MASK_PRESETS_WITHOUT_OBJECTS
    from misato.masks import PRESETS

    assert MASK_PRESETS_WITHOUT_OBJECTS == tuple(name for name, preset in PRESETS.items() if not preset.needs_objects)


def test_the_command_lines_smallest_mask_side_is_the_generators():
    from misato.cli_choices import MASK_SIDE_RANGE
    from misato.masks.presets import MIN_MASK_SIDE

    assert MASK_SIDE_RANGE[0] == MIN_MASK_SIDE
    make_generator("rect", MIN_MASK_SIDE)
    with pytest.raises(MisatoError, match=f"at least {MIN_MASK_SIDE} pixels"):
        make_generator("rect", MIN_MASK_SIDE - 1)
