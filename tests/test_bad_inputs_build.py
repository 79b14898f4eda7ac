"""Bad inputs of ``misato build`` beyond tests/test_bad_inputs.py: object masks checked before anything is written,
``--overwrite`` against ``--resume`` and foreign folders, and a resume after the raw files were rewritten. Each
row exits 2 with one line naming the path, and leaves the inputs byte-identical (:func:`assert_refused_cleanly`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import misato.io
from misato.build import builder
from misato.cli import main
from tests.helpers import smooth_image
from tests.test_bad_inputs import BUILD, Case, _fill, assert_refused_cleanly, tree_digest, world  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def inputs(world: Path) -> Path:  # noqa: F811 (the imported fixture)
    """``world`` plus object-mask folders with one bad file each (``0.png`` is good, ``1.png`` is not)."""
    good = np.zeros((16, 16), bool)
    good[4:12, 5:11] = True
    for name in ("objects_corrupt", "objects_binary01", "objects_empty"):
        misato.io.write_mask(world / name / "0.png", good if name != "objects_empty" else np.zeros_like(good))
    (world / "objects_corrupt" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    misato.io.write_image(world / "objects_binary01" / "1.png", np.repeat(good[..., None], 3, axis=2).astype(np.uint8))
    misato.io.write_mask(world / "objects_empty" / "1.png", np.zeros_like(good))
    return world


def _with_objects(folder: str) -> str:
    return BUILD.replace("--mask-objects {in}/objects", f"--mask-objects {{in}}/{folder}")


CASES = [
    # every object mask is read before anything is written (the generator may draw any of them, for any image)
    Case("build-corrupt-object-mask", _with_objects("objects_corrupt") + " --out {out}/b", ("{in}/objects_corrupt/1.png",)),
    Case("build-object-mask-0-1-valued", _with_objects("objects_binary01") + " --out {out}/b", ("{in}/objects_binary01/1.png", "0/1")),
    Case("build-object-masks-all-empty", _with_objects("objects_empty") + " --out {out}/b", ("{in}/objects_empty", "all 2 object masks are empty")),
    # --overwrite
    Case("build-overwrite-and-resume", BUILD + " --out {out}/b --resume --overwrite", ("--overwrite", "--resume")),
    Case("build-overwrite-a-folder-no-build-wrote", BUILD + " --out {in}/user --overwrite", ("{in}/user", "holds no build.json")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_build_input_is_exit_2_one_line_and_nothing_written(case, inputs, tmp_path, capsys, monkeypatch):
    assert_refused_cleanly(case, inputs, tmp_path, capsys, monkeypatch)
    assert not any(tmp_path.iterdir())  # refused before the output folder was made


def _build_killed_after_one_image(argv: list[str], out: Path, monkeypatch) -> None:
    """Run ``misato build`` until its first image is written, then interrupt it (exit 130, the state left)."""
    write_one = builder._write_one
    written = []

    def killed_after_one(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(write_one(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(builder, "_write_one", killed_after_one)
    assert main(argv) == 130
    monkeypatch.setattr(builder, "_write_one", write_one)
    assert (out / "image" / "0000.png").is_file() and (out / ".misato-build").is_dir()


def test_resume_after_the_raw_files_were_rewritten_is_refused_and_overwrite_rebuilds(inputs, tmp_path, capsys,
                                                                                     monkeypatch):
    """A build killed after one image; the raw files are then replaced under the same names. ``--resume`` would mix
    crops of both versions: it is refused naming a file and ``--overwrite``, which then gives a fresh build's bytes."""
    shutil.copytree(inputs / "raw", tmp_path / "raw")
    command = BUILD.replace("{in}/raw", "{out}/raw").replace("--per-domain 1", "--per-domain 2")
    _build_killed_after_one_image(_fill(command + " --out {out}/b", inputs, tmp_path).split(), tmp_path / "b",
                                  monkeypatch)
    rng = np.random.default_rng(7)
    for path in sorted((tmp_path / "raw").iterdir()):
        misato.io.write_image(path, smooth_image(rng, 48))
    capsys.readouterr()
    assert_refused_cleanly(Case("build-resume-after-raw-rewritten", command + " --out {out}/b --resume",
                                ("{out}/raw/", "changed since the build in {out}/b", "--overwrite")),
                           inputs, tmp_path, capsys, monkeypatch)
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert main(_fill(command + " --out {out}/b --overwrite", inputs, tmp_path).split()) == 0
    assert main(_fill(command + " --out {out}/fresh", inputs, tmp_path).split()) == 0
    rebuilt, fresh = tree_digest(tmp_path / "b"), tree_digest(tmp_path / "fresh")
    assert rebuilt.pop("notes.txt") and rebuilt == fresh


def test_resume_after_the_object_masks_were_edited_in_place_is_refused(inputs, tmp_path, capsys, monkeypatch):
    """The settings identify the object masks by content, not only by folder: masks drawn for the first images
    and for the rest would otherwise come from two versions of the folder."""
    shutil.copytree(inputs / "objects", tmp_path / "objects")
    command = BUILD.replace("{in}/objects", "{out}/objects").replace("--per-domain 1", "--per-domain 2")
    _build_killed_after_one_image(_fill(command + " --out {out}/b", inputs, tmp_path).split(), tmp_path / "b",
                                  monkeypatch)
    edited = np.zeros((16, 16), bool)
    edited[2:6, 2:14] = True
    misato.io.write_mask(tmp_path / "objects" / "1.png", edited)
    capsys.readouterr()
    assert_refused_cleanly(Case("build-resume-after-objects-edited", command + " --out {out}/b --resume",
                                ("{out}/b", "different settings (objects_sha256)")),
                           inputs, tmp_path, capsys, monkeypatch)
