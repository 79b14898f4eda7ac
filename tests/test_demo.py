"""The README's main job: `misato demo` end to end on the bundled sample (small size to stay fast)."""
import json

import pytest

from evaluate.metric_info import DEFAULT_METRICS
from misato.build.verify import verify
from misato.cli import main
from misato.cli_demo import DEMO_METHODS, SAMPLE_IMAGES, demo
from misato.errors import MisatoError
from misato.io import list_images, read_image
from results.grid import DEFAULT_TILE, GridLayout


def test_demo_runs_end_to_end_and_accounts_for_every_metric(tmp_path):
    result = demo(tmp_path / "d", size=64, progress=False)
    assert set(result["metrics"]) | set(result["skipped"]) == set(DEFAULT_METRICS)
    assert {"psnr", "ssim", "grad"} <= set(result["metrics"])  # need no weights
    assert len(list_images(tmp_path / "d" / "data" / "image")) == len(SAMPLE_IMAGES)
    assert read_image(tmp_path / "d" / "data" / "image" / "0000.png").shape == (64, 64, 3)
    assert verify(tmp_path / "d" / "data") == []  # a consistent MISATO-layout folder with its build record
    for method in ("telea", "navier-stokes"):
        summary = json.loads((tmp_path / "d" / "runs" / method / "summary.json").read_text())
        assert summary["n"] == len(SAMPLE_IMAGES) and set(summary["metrics"]) == set(result["metrics"])
    table = (tmp_path / "d" / "comparison.md").read_text()
    assert "telea" in table and "navier-stokes" in table
    assert (tmp_path / "d" / "comparison.csv").is_file()
    layout = GridLayout(len(SAMPLE_IMAGES), 2 + len(DEMO_METHODS), DEFAULT_TILE, zoom=True)
    grid_png = read_image(tmp_path / "d" / "grid.png")
    assert grid_png.shape[:2] == layout.size
    y0, x0, y1, x1 = layout.tile_box(3, 1 + DEMO_METHODS.index("telea"))  # 64 px enlarged 4x, pixel for pixel
    telea = read_image(tmp_path / "d" / "predictions" / "telea" / "0003.png")
    assert (grid_png[y0:y1, x0:x1] == telea.repeat(4, 0).repeat(4, 1)).all()
    assert sorted(p.name for p in result["pictures"]) == ["grid.png", "mask_ratio.png", "mask_ratio.svg"]
    assert (tmp_path / "d" / "plots" / "mask_ratio.svg").is_file()


def test_demo_is_reproducible_and_refuses_to_overwrite(tmp_path, capsys):
    demo(tmp_path / "a", size=64, progress=False)
    demo(tmp_path / "b", size=64, progress=False)
    for sub in ("data/mask/0003.png", "predictions/telea/0003.png", "runs/telea/per_image.csv", "grid.png",
                "plots/mask_ratio.svg", "plots/mask_ratio.png"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()
    with pytest.raises(MisatoError, match="--overwrite"):
        demo(tmp_path / "a", size=64, progress=False)
    assert main(["demo", "--out", str(tmp_path / "a"), "--size", "64", "--overwrite"]) == 0
    assert "Computed:" in capsys.readouterr().out


def test_demo_overwrite_never_deletes_what_a_demo_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(MisatoError, match="holds no demo.json"):
        demo(mine, size=64, overwrite=True, progress=False)
    assert (mine / "thesis.tex").read_text() == "years of work"
    demo(tmp_path / "d", size=64, progress=False)
    mine = ("notes.txt", "runs/notes.txt", "runs/telea/notes.txt", "data/README")  # a user's
    for name in mine:  # files, also beside what the demo's jobs wrote
        (tmp_path / "d" / name).write_text("kept")
    demo(tmp_path / "d", size=64, overwrite=True, progress=False)
    record = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert record["complete"] and record["provenance"]["protocol"] == "asuka"
    assert all((tmp_path / "d" / name).read_text() == "kept" for name in mine)
    (tmp_path / "d" / "predictions" / "telea" / "notes.txt").write_text("kept")  # where the runner writes: its
    with pytest.raises(MisatoError, match="predictions/telea is not empty"):  # folder is refused, the file kept
        demo(tmp_path / "d", size=64, overwrite=True, progress=False)
    assert (tmp_path / "d" / "predictions" / "telea" / "notes.txt").read_text() == "kept"


def test_the_demo_policy_covers_what_its_jobs_write():
    """DEMO_POLICY is spelled out (the command line must not import the jobs): every file the runner, the
    evaluator and the plots write in their demo sub-folders is among what its --overwrite deletes."""
    from fnmatch import fnmatchcase

    from baselines.runner import RUN_POLICY
    from evaluate.schema import RUN_FILES
    from misato.cli_demo import DEMO_POLICY
    from misato.outputs import within
    from results.plots import PLOT_POLICY

    written = (*within("predictions/telea", RUN_POLICY.owned), *within("runs/telea", RUN_FILES),
               *within("plots", PLOT_POLICY.owned))
    for path in written:
        assert any(fnmatchcase(path, pattern) for pattern in DEMO_POLICY.owned), path


@pytest.mark.parametrize("refused, env", [
    (["--mask-preset", "nosuch"], {}),
    (["--mask-preset", "object"], {}),
    (["--size", "7"], {}),
    (["--size", "2048"], {"MISATO_MEMORY_LIMIT": "100M"}),
], ids=["unknown-preset", "preset-needing-objects", "size-below-range", "over-memory"])
def test_a_refused_demo_writes_nothing_so_the_corrected_run_proceeds(tmp_path, monkeypatch, capsys, refused, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "d"
    try:
        code = main(["demo", "--out", str(out), *refused])
    except SystemExit as stop:  # argparse refuses the value
        code = stop.code
    assert code == 2 and not out.exists()
    for name in env:
        monkeypatch.delenv(name)
    assert main(["demo", "--out", str(out), "--size", "32"]) == 0
    assert json.loads((out / "demo.json").read_text())["complete"]


def test_demo_refuses_a_mask_preset_needing_objects_naming_its_own_argument(tmp_path):
    with pytest.raises(MisatoError, match=r"^mask_preset= 'object': the demo runs the presets needing no object "
                                          r"source: lama-thin-512, "):
        demo(tmp_path / "d", size=32, mask_preset="object", progress=False)
    assert not (tmp_path / "d").exists()


def test_demo_from_python_refuses_a_size_the_masks_cannot_take_before_writing(tmp_path):
    """Python calls skip argparse's range: the mask generator's refusal comes before anything is written."""
    with pytest.raises(MisatoError, match=r"^size= must be an integer of at least 16 pixels"):
        demo(tmp_path / "d", size=10, progress=False)
    assert not (tmp_path / "d").exists()
