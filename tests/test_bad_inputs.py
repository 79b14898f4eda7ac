"""Every bad input and fault of the reliability sweep (issue 7), one row each: the command exits 2 with one line
naming the path or option, no traceback, and every input folder is byte-identical afterwards.

Also here: disk full and no permission for real (an ``OSError`` injected inside :func:`misato.io.atomic_write_bytes`,
so the rest of the write path runs as usual, and a real ``chmod`` when not root), and kill-and-resume of
``misato masks`` at several points. The build's kill-and-resume is ``tests/misato/test_build.py``
(``test_interrupted_build_resumes_byte_identical``). Nothing here loads a real network; the module runs in seconds.

Running as root (CI runs ``.ci/run`` as root): root ignores permission bits, so the ``chmod`` test runs the
command in a child process under util-linux's ``setpriv`` with the capabilities that override them dropped; only
where ``setpriv`` is missing is it skipped, and the injected ``EACCES``/``EROFS`` rows stand in for it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import misato.io
from misato.cli import main
from misato.cli_choices import BOOTSTRAP_RANGE, MASK_SIDE_RANGE, SEED_RANGE, SIDE_RANGE
from tests.evaluate.test_compare import NAMES, write_run
from tests.results.test_reproduce import MAPPING as STUDY_MAPPING
from tests.helpers import smooth_image, write_misato_folder, write_predictions
from tests.misato.test_build_support import tiny_clip_model

# --------------------------------------------------------------------------------------------- the inputs


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Every input the rows read, under one folder hashed before and after each row."""
    root = tmp_path_factory.mktemp("inputs")
    gt = write_misato_folder(root / "gt", n=4, size=32)
    write_predictions(gt, root / "pred")
    assert main(["inpaint", "--method", "telea", "--data", str(gt), "--out", str(root / "telea")]) == 0
    rng = np.random.default_rng(0)
    write_run(root, "runA", {"psnr": rng.normal(22, 2, len(NAMES))})
    write_run(root, "runB", {"psnr": rng.normal(22, 2, len(NAMES))})
    cut = write_run(root, "run_cut", {"psnr": rng.normal(22, 2, len(NAMES))})
    (cut / "per_image.csv").write_bytes((cut / "per_image.csv").read_bytes()[:150])  # cut mid-row
    short = write_run(root, "run_short", {"psnr": rng.normal(22, 2, len(NAMES))})
    lines = (short / "per_image.csv").read_text().splitlines(keepends=True)
    (short / "per_image.csv").write_text("".join(lines[:4]))  # cut at a line end: 3 of 12 rows
    no_n = write_run(root, "run_no_n", {"psnr": rng.normal(22, 2, len(NAMES))})
    summary = json.loads((no_n / "summary.json").read_text())
    del summary["n"]
    (no_n / "summary.json").write_text(json.dumps(summary))
    (root / "raw").mkdir()
    for i in range(3):
        misato.io.write_image(root / "raw" / f"{i}.png", smooth_image(rng, 48))
    objects = np.zeros((16, 16), bool)
    objects[4:12, 5:11] = True
    for i in range(2):
        misato.io.write_mask(root / "objects" / f"{i}.png", objects)
    (root / "random.bin").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "user").mkdir()
    (root / "user" / "per_image.csv").write_text("my own table\n")
    for part in ("unet", "vae", "scheduler"):
        (root / "sd" / part).mkdir(parents=True)
    (root / "weights").mkdir()
    (root / "empty").mkdir()
    cut_manifest = write_misato_folder(root / "cut_manifest", n=3, size=16)
    (cut_manifest / "manifest.csv").write_text("name,domain,index\n0000,landscape,0\n0001,landscape,1\n0002,lan")
    (cut_manifest / "build.json").write_text("{}")
    no_build_json = write_misato_folder(root / "no_build_json", n=2, size=16)
    (no_build_json / "manifest.csv").write_text("name,domain\n0000,landscape\n0001,landscape\n")
    leftover = write_misato_folder(root / "leftover_state", n=2, size=16)
    (leftover / ".misato-build").mkdir()
    undecodable = write_misato_folder(root / "undecodable_name", n=2, size=16)
    for part in ("image", "mask"):
        (undecodable / part / "0000.png").rename(undecodable / part / os.fsdecode(b"\xff\xfe.png"))
    assert main(["masks", "--preset", "rect", "--n", "2", "--size", "16", "--out", str(root / "masks_bad_csv")]) == 0
    (root / "masks_bad_csv" / "masks.csv").write_bytes(b"\xff\xfe")
    (root / "link_to_runA").symlink_to(root / "runA", target_is_directory=True)
    tiny_clip_model(root / "clip")
    (root / "classical.toml").write_text(STUDY_MAPPING)
    study = '[evaluation]\nprotocol = "asuka"\nmetrics = ["psnr", "ssim", "grad"]\n[tables]\nmappings = ["classical.toml"]\n'
    (root / "study_escape.toml").write_text(study + '[methods."../../escaped"]\nmethod = "telea"\n')
    (root / "study_bad_radius.toml").write_text(study + '[methods.telea]\noptions = { radius = "wide" }\n')
    for folder, record in (("demo", "demo.json"), ("study", "study.json"), ("train", "train.json")):
        (root / folder).mkdir()
        (root / folder / record).write_text(json.dumps({"stage": "decoder"} if folder == "train" else {}))
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256 of the bytes, or 'dir'/'link -> target'}`` of everything under ``root``."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            digest[key] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            digest[key] = "dir"
        else:
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


# ----------------------------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Case:
    """One bad command line: ``{in}`` is the inputs folder, ``{out}`` a fresh folder outside it."""

    name: str
    argv: str
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    stdout: str | None = None  # a problem listed on stdout (misato verify)


MASKS = "masks --preset rect --n 2 --size 32"
BUILD = "build --domain x={in}/raw --mask-objects {in}/objects --clip-model local-dir:{in}/clip --clip-pretrained none --per-domain 1 --size 32 --workers 0"
EVAL = "evaluate --pred {in}/pred --gt {in}/gt --metrics psnr"
CASES = [
    # outputs on or inside an input
    Case("compare-out-is-an-input-file", "compare {in}/runA {in}/runB --out {in}/runA/per_image.csv", ("{in}/runA/per_image.csv", "lies inside the input folder")),
    Case("compare-out-is-a-run-folder", "compare {in}/runA {in}/runB --out {in}/runB", ("{in}/runB", "is the input")),
    Case("compare-out-through-a-symlink", "compare {in}/runA --out {in}/link_to_runA/table.csv", ("lies inside the input folder {in}/runA",)),
    Case("build-out-inside-raw", BUILD + " --out {in}/raw/misato", ("{in}/raw/misato", "lies inside the input folder {in}/raw")),
    Case("build-feature-cache-inside-raw", BUILD + " --out {out}/b --feature-cache {in}/raw/cache", ("{in}/raw/cache", "lies inside")),
    Case("evaluate-out-is-gt-root", EVAL + " --out {in}/gt", ("{in}/gt", "is the input")),
    Case("evaluate-out-inside-pred", EVAL + " --out {in}/pred/run", ("{in}/pred/run", "lies inside the input folder {in}/pred")),
    Case("evaluate-keeps-a-users-per-image-csv", EVAL + " --out {in}/user", ("{in}/user", "per_image.csv", "--overwrite")),
    Case("assemble-out-is-sd", "asuka assemble --sd {in}/sd --out {in}/sd", ("{in}/sd", "is the input")),
    Case("assemble-out-inside-sd", "asuka assemble --sd {in}/sd --out {in}/sd/asuka", ("{in}/sd/asuka", "lies inside the input folder {in}/sd")),
    Case("inpaint-out-inside-data", "inpaint --method opencv-telea --data {in}/gt --out {in}/gt/pred", ("{in}/gt/pred", "lies inside")),
    Case("masks-out-inside-objects", "masks --preset object --n 2 --size 32 --objects {in}/objects --out {in}/objects/m", ("{in}/objects/m", "lies inside")),
    Case("mask-stats-out-inside-folder", "mask-stats {in}/gt/mask --out {in}/gt/mask/stats.json", ("{in}/gt/mask/stats.json", "lies inside")),
    Case("compare-out-inside-a-demo-folder", "compare {in}/runA {in}/runB --out {in}/demo/runs/table.csv", ("{in}/demo/runs", "demo", "--overwrite")),
    Case("reproduce-out-inside-a-study", "reproduce --data {in}/gt --out {in}/study/predictions/mine", ("{in}/study/predictions", "study")),
    Case("masks-out-inside-a-training-run", "masks --preset lama --n 2 --size 32 --out {in}/train/decoder/m", ("{in}/train/decoder", "training run")),
    Case("fid-save-stats-inside-input", "fid {in}/pred --save-stats {in}/pred/stats.npz", ("{in}/pred/stats.npz", "lies inside")),
    Case("demo-out-inside-weights-dir", "demo --weights-dir {in}/weights --out {in}/weights/demo", ("{in}/weights/demo", "lies inside")),
    # truncated or ragged evaluation runs
    Case("compare-no-paired-ragged-csv", "compare {in}/run_cut {in}/runA --no-paired --out {out}/t.csv", ("{in}/run_cut/per_image.csv", "truncated")),
    Case("compare-no-paired-short-csv", "compare {in}/run_short --no-paired --out {out}/t.csv", ("{in}/run_short/per_image.csv", "3 image row(s)", "n = 12")),
    Case("compare-summary-without-n", "compare {in}/run_no_n --no-paired --out {out}/t.csv", ("{in}/run_no_n/summary.json", '"n"')),
    # unbounded work and option ranges
    Case("masks-huge-size", MASKS.replace("32", "1000000") + " --out {out}/m", ("--size", f"{MASK_SIDE_RANGE[0]} to {MASK_SIDE_RANGE[1]}")),
    Case("build-huge-size", BUILD.replace("--size 32", "--size 100000") + " --out {out}/b", ("--size", str(SIDE_RANGE[1]))),
    Case("compare-huge-bootstrap", "compare {in}/runA --bootstrap 100000000 --out {out}/t.csv", ("--bootstrap", str(BOOTSTRAP_RANGE[1]))),
    Case("masks-over-the-memory-limit", MASKS.replace("32", "4096") + " --out {out}/m", ("--size 4096", "256.0 MB", "10.0 MB", "MISATO_MEMORY_LIMIT"), env={"MISATO_MEMORY_LIMIT": "10M"}),
    Case("build-over-the-memory-limit", BUILD.replace("--size 32", "--size 4096") + " --out {out}/b", ("--size 4096", "MISATO_MEMORY_LIMIT"), env={"MISATO_MEMORY_LIMIT": "10M"}),
    Case("build-features-over-the-memory-limit", BUILD + " --batch-size 4096 --out {out}/b", ("--batch-size 4096", "--workers 0", "MISATO_MEMORY_LIMIT"), env={"MISATO_MEMORY_LIMIT": "260M"}),
    Case("compare-over-the-memory-limit", "compare {in}/runA --bootstrap 1000000 --out {out}/t.csv", ("--bootstrap 1000000", "MISATO_MEMORY_LIMIT"), env={"MISATO_MEMORY_LIMIT": "10M"}),
    Case("memory-limit-unreadable", MASKS + " --out {out}/m", ("MISATO_MEMORY_LIMIT", "'lots'"), env={"MISATO_MEMORY_LIMIT": "lots"}),
    Case("masks-negative-seed", MASKS + " --seed -1 --out {out}/m", ("--seed", f"0 to {SEED_RANGE[1]}")),
    Case("build-negative-seed", BUILD + " --seed -1 --out {out}/b", ("--seed",)),
    Case("compare-negative-seed", "compare {in}/runA --seed -1 --out {out}/t.csv", ("--seed",)),
    Case("build-zero-batch", BUILD + " --batch-size 0 --out {out}/b", ("--batch-size",)),
    Case("fid-zero-batch", "fid {in}/pred {in}/gt/image --batch-size 0", ("--batch-size",)),
    Case("evaluate-negative-workers", EVAL + " --workers -1 --out {out}/e", ("--workers",)),
    Case("build-device-tpu", BUILD + " --device tpu --out {out}/b", ("--device", "'tpu'")),
    Case("evaluate-device-tpu", EVAL + " --device tpu --out {out}/e", ("--device", "'tpu'")),
    Case("masks-nan-ratio", MASKS + " --ratio-range nan 0.5 --out {out}/m", ("--ratio-range", "finite")),
    Case("build-inf-ratio", BUILD + " --mask-ratio-range 0.1 inf --out {out}/b", ("--mask-ratio-range", "finite")),
    Case("inpaint-huge-radius", "inpaint --method telea --data {in}/gt --out {out}/p --radius 1000000", ("--radius of telea must be from 1 to 100, got 1000000",)),
    Case("inpaint-zero-radius", "inpaint --method navier-stokes --data {in}/gt --out {out}/p --radius 0", ("--radius of navier-stokes must be from 1 to 100",)),
    Case("inpaint-nan-guidance", "inpaint --method sd --model {in}/sd --data {in}/gt --out {out}/p --guidance-scale nan", ("--guidance-scale", "finite")),
    # the study commands: tables, reproduce, grid, plot, train mae
    Case("tables-missing-runs", "tables --runs {out}/nowhere --out {out}/t", ("{out}/nowhere",)),
    Case("tables-empty-runs", "tables --runs {in}/empty --out {out}/t", ("{in}/empty",)),
    Case("tables-out-inside-runs", "tables --runs {in} --out {in}/runA/x", ("{in}/runA/x", "lies inside")),
    Case("reproduce-missing-data", "reproduce --data {out}/nowhere --out {out}/s", ("{out}/nowhere",)),
    Case("reproduce-empty-data", "reproduce --data {in}/empty --out {out}/s", ("{in}/empty",)),
    Case("reproduce-out-inside-data", "reproduce --data {in}/gt --out {in}/gt/s", ("{in}/gt/s", "lies inside")),
    Case("reproduce-zero-jobs", "reproduce --data {in}/gt --out {out}/s --jobs 0", ("--jobs",)),
    Case("reproduce-entry-name-escapes-out", "reproduce --config {in}/study_escape.toml --data {in}/gt --out {out}/s", ("{in}/study_escape.toml [methods.../../escaped]", "the name '../../escaped'")),
    Case("reproduce-print-commands-entry-name-escapes-out", "reproduce --config {in}/study_escape.toml --data {in}/gt --out {out}/s --print-commands", ("the name '../../escaped'",)),
    Case("reproduce-option-of-the-wrong-type", "reproduce --config {in}/study_bad_radius.toml --data {in}/gt --out {out}/s", ("{in}/study_bad_radius.toml [methods.telea]: option radius must be int, got 'wide'",)),
    Case("reproduce-device-tpu", "reproduce --data {in}/gt --out {out}/s --device tpu", ("--device", "'tpu'")),
    Case("grid-missing-data", "grid --data {out}/nowhere --runs {in}/pred --out {out}/g.png", ("{out}/nowhere",)),
    Case("grid-missing-run", "grid --data {in}/gt --runs {out}/nowhere --out {out}/g.png", ("{out}/nowhere",)),
    Case("grid-empty-data", "grid --data {in}/empty --runs {in}/pred --out {out}/g.png", ("{in}/empty",)),
    Case("grid-out-inside-data", "grid --data {in}/gt --runs {in}/pred --out {in}/gt/g.png", ("{in}/gt/g.png", "lies inside")),
    Case("grid-out-inside-run", "grid --data {in}/gt --runs {in}/pred --out {in}/pred/g.png", ("{in}/pred/g.png", "lies inside")),
    Case("grid-zero-tile", "grid --data {in}/gt --runs {in}/pred --tile 0 --out {out}/g.png", ("--tile", f"at least {SIDE_RANGE[0]}")),
    Case("grid-zero-count", "grid --data {in}/gt --runs {in}/pred --worst psnr --eval {out}/never-opened --count 0 --out {out}/g.png", ("--count must be at least 1",)),
    Case("grid-over-the-memory-limit", "grid --data {in}/gt --runs {in}/telea --tile 4096 --out {out}/g.png", ("--tile 4096 grid of 4 images × 3 columns in one PNG", "MISATO_MEMORY_LIMIT"), env={"MISATO_MEMORY_LIMIT": "100M"}),
    Case("grid-huge-tile", "grid --data {in}/gt --runs {in}/pred --tile 1000000 --out {out}/g.png", ("--tile", f"at most {SIDE_RANGE[1]}")),
    Case("plot-missing-run", "plot --runs {out}/nowhere --out {out}/p", ("{out}/nowhere",)),
    Case("plot-empty-run", "plot --runs {in}/empty --out {out}/p", ("{in}/empty",)),
    Case("plot-out-inside-run", "plot --runs {in}/runA --out {in}/runA/p", ("{in}/runA/p", "lies inside")),
    Case("plot-negative-bootstrap", "plot --runs {in}/runA --bootstrap -1 --out {out}/p", ("--bootstrap",)),
    Case("plot-huge-bootstrap", "plot --runs {in}/runA --bootstrap 100000000 --out {out}/p", ("--bootstrap", str(BOOTSTRAP_RANGE[1]))),
    Case("plot-negative-seed", "plot --runs {in}/runA --seed -1 --out {out}/p", ("--seed", f"from 0 to {SEED_RANGE[1]}")),
    Case("train-mae-missing-data", "train mae --data {out}/nowhere --out {out}/t --mae-init scratch", ("{out}/nowhere",)),
    Case("train-mae-empty-data", "train mae --data {in}/empty --out {out}/t --mae-init scratch", ("{in}/empty",)),
    Case("train-mae-out-inside-data", "train mae --objects {in}/objects --data {in}/raw --out {in}/raw/t --mae-init scratch", ("{in}/raw/t", "lies inside")),
    Case("train-mae-negative-seed", "train mae --objects {in}/objects --data {in}/raw --out {out}/t --seed -1", ("--seed",)),
    Case("train-mae-zero-batch", "train mae --objects {in}/objects --data {in}/raw --out {out}/t --batch-size 0", ("--batch-size",)),
    Case("train-mae-huge-resolution", "train mae --objects {in}/objects --data {in}/raw --out {out}/t --resolution 1000000", ("--resolution",)),
    Case("train-mae-negative-workers", "train mae --objects {in}/objects --data {in}/raw --out {out}/t --num-workers -1", ("--num-workers",)),
    # files that are not what they claim, offline, missing folders
    Case("inpaint-undecodable-file-name", "inpaint --method telea --data {in}/undecodable_name --out {out}/p", ("{in}/undecodable_name/image", "not valid UTF-8")),
    Case("evaluate-undecodable-file-name", "evaluate --pred {in}/pred --gt {in}/undecodable_name --metrics psnr --out {out}/e", ("{in}/undecodable_name/image", "not valid UTF-8")),
    Case("mask-stats-masks-csv-not-utf8", "mask-stats {in}/masks_bad_csv", ("{in}/masks_bad_csv/masks.csv", "not a UTF-8 CSV")),
    Case("mask-stats-out-not-a-table", "mask-stats {in}/gt/mask --out -", ("--out -", ".json or .csv")),
    Case("clip-random-bytes", BUILD.replace("--clip-pretrained none", "--clip-pretrained {in}/random.bin") + " --out {out}/b", ("{in}/random.bin", "not a checkpoint of CLIP")),
    Case("inception-random-bytes", "fid {in}/pred {in}/gt/image --inception-weights {in}/random.bin", ("{in}/random.bin", "not a checkpoint of torchvision Inception-v3")),
    Case("clip-openai-offline", BUILD.replace("--clip-pretrained none", "--clip-pretrained openai").replace("--clip-model local-dir:{in}/clip", "--weights-dir {in}/weights") + " --out {out}/b", ("ViT-L-14.pt", "offline")),
    Case("weights-fetch-offline", "weights fetch big-lama-torchscript --weights-dir {out}/w", ("offline",)),
    Case("weights-list-missing-dir", "weights list --weights-dir {out}/nowhere", ("{out}/nowhere", "does not exist")),
    Case("weights-verify-missing-dir", "weights verify --weights-dir {out}/nowhere", ("{out}/nowhere", "does not exist")),
    Case("weights-list-missing-env-dir", "weights list", ("$MISATO_WEIGHTS_DIR {out}/nowhere", "does not exist"), env={"MISATO_WEIGHTS_DIR": "{out}/nowhere"}),
    Case("verify-manifest-cut-mid-row", "verify {in}/cut_manifest", ("{in}/cut_manifest", "problem"), stdout="manifest.csv: 1 row(s) do not have the 3 fields"),
    Case("verify-manifest-without-build-json", "verify {in}/no_build_json", ("problem",), stdout="build.json is missing"),
    Case("verify-leftover-state", "verify {in}/leftover_state", ("problem",), stdout=".misato-build/ is left over"),
    # messages name the command's own flags
    Case("build-flag-names-mask-objects", BUILD.replace(" --mask-objects {in}/objects", "") + " --out {out}/b", ("--mask-objects",)),
    Case("masks-flag-names-objects", "masks --preset misato --n 2 --size 32 --out {out}/m", ("--objects",)),
]


def _fill(text: str, inputs: Path, out: Path) -> str:
    return text.replace("{in}", str(inputs)).replace("{out}", str(out))


def assert_refused_cleanly(case: Case, world: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Run one row: exit 2, one message line starting ``misato CMD: error:`` that holds every ``case.says``,
    no traceback, and the inputs byte-identical afterwards."""
    for name, value in case.env.items():
        monkeypatch.setenv(name, _fill(value, world, tmp_path))
    before = tree_digest(world)
    argv = _fill(case.argv, world, tmp_path).split()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse refuses the value: usage lines, then one error line
        code = stop.code
    captured = capsys.readouterr()
    err = captured.err.rstrip("\n")
    assert code == 2, err
    assert "Traceback" not in err and "weights_only" not in err
    line = err.splitlines()[-1]
    command = " ".join(argv[:2] if argv[0] in ("asuka", "weights") else argv[:1])  # with its action, as argparse
    assert line.startswith(f"misato {command}: error: "), err
    assert not line.removeprefix(f"misato {command}: error: ").startswith(("misato ", "python -m ")), line  # one prefix
    assert sum(text.startswith("misato ") for text in err.splitlines()) == 1, err  # one message line (beside
    # argparse's usage lines or a progress bar)
    for expected in case.says:
        assert _fill(expected, world, tmp_path) in line, line
    assert "(objects=)" not in line
    if case.stdout is not None:
        assert case.stdout in captured.out
    assert tree_digest(world) == before


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_exit_2_one_line_naming_it_inputs_untouched(case, world, tmp_path, capsys, monkeypatch):
    assert_refused_cleanly(case, world, tmp_path, capsys, monkeypatch)


def test_every_command_with_an_output_option_declares_its_paths():
    """The guard is structural: a subcommand writing files must say which options it reads and writes."""
    import argparse

    from misato.cli import build_parser

    parser = build_parser()
    pending = [parser]
    checked = 0
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
        outputs = {a.dest for a in current._actions if a.dest in ("out", "save_stats")}
        if outputs and current is not parser:
            declared = current.get_default("path_outputs")
            assert declared is not None and outputs <= set(declared), current.prog
            assert current.get_default("path_inputs"), current.prog
            checked += 1
    assert checked >= 9  # masks, mask-stats, build, compare, evaluate, fid, demo, inpaint, asuka assemble


# ------------------------------------------------------------------------- disk full, no permission


@pytest.fixture
def failing_writes(monkeypatch):
    """Make the bytes of every atomic write fail with the given errno (inside the helper, after the temporary
    file exists), as a full disk or a read-only file system would."""

    def install(code: int):
        real_fdopen = os.fdopen

        def fdopen(handle, mode="r", *args, **kwargs):
            stream = real_fdopen(handle, mode, *args, **kwargs)
            if "w" in mode:
                def write(data):
                    raise OSError(code, os.strerror(code))

                stream.write = write
            return stream

        monkeypatch.setattr(misato.io.os, "fdopen", fdopen)

    return install


def _hidden_or_partial(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
@pytest.mark.parametrize("command", ["masks", "evaluate", "compare", "mask-stats"])
def test_disk_full_or_unwritable_is_exit_2_and_leaves_no_partial_file(world, tmp_path, capsys, failing_writes,
                                                                      command, code):
    out = tmp_path / "out"
    argv = {
        "masks": f"{MASKS} --out {out}",
        "evaluate": f"{EVAL} --out {out}",
        "compare": f"compare {{in}}/runA --out {out}/table.csv",
        "mask-stats": f"mask-stats {{in}}/gt/mask --out {out}/stats.json",
    }[command]
    before = tree_digest(world)
    failing_writes(code)
    assert main(_fill(argv, world, tmp_path).split()) == 2
    err = capsys.readouterr().err
    assert f"{out}" in err and err.rstrip().endswith(f": {os.strerror(code)}"), err
    assert sum(text.startswith("misato ") for text in err.splitlines()) == 1 and "Traceback" not in err
    assert _hidden_or_partial(out) == [] if out.exists() else True  # the temporary file was removed
    assert tree_digest(world) == before


SETPRIV = shutil.which("setpriv")
WITHOUT_DAC = [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", "--"]
"""As root (CI runs as root), permission bits bind only once the capabilities that override them are dropped:
util-linux's ``setpriv`` runs the command without them."""


@pytest.mark.skipif(os.geteuid() == 0 and SETPRIV is None, reason="root ignores permission bits and setpriv "
                    "(util-linux) is not here to drop that; the injected EACCES/EROFS rows cover the messages")
@pytest.mark.parametrize("command", ["masks", "evaluate"])
def test_unwritable_output_folder_for_real(world, tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = _fill(f"{MASKS} --out {locked}/m" if command == "masks" else f"{EVAL} --out {locked}/e", world, tmp_path)
        if os.geteuid() == 0:
            child = subprocess.run([*WITHOUT_DAC, sys.executable, "-m", "misato", *argv.split()],
                                   capture_output=True, text=True)
            code, err = child.returncode, child.stderr
        else:
            code, err = main(argv.split()), capsys.readouterr().err
        assert code == 2, err
        assert str(locked) in err and "Permission denied" in err and "Traceback" not in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------------------------- kill and resume: masks


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_provenance(files: dict[str, bytes]) -> dict[str, bytes]:
    record = json.loads(files["masks.json"])
    record.pop("provenance")
    return {**files, "masks.json": json.dumps(record, sort_keys=True).encode()}


class Killed(BaseException):
    """Stands for kill -9: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("killed_after", [0, 1, 4])
def test_masks_killed_at_several_points_resume_to_identical_bytes(tmp_path, monkeypatch, killed_after):
    import misato.masks.generate as generate

    reference = tmp_path / "reference"
    assert main(f"{MASKS.replace('--n 2', '--n 6')} --seed 3 --out {reference}".split()) == 0
    target = tmp_path / "target"
    real_write = generate.write_mask
    written = []

    def write_then_die(path, mask):
        if len(written) == killed_after:
            # the kill lands inside the atomic write: its hidden temporary file stays behind
            (path.parent / f".{path.name}.k1ll.tmp").write_bytes(b"half a png")
            raise Killed
        written.append(path)
        real_write(path, mask)

    monkeypatch.setattr(generate, "write_mask", write_then_die)
    with pytest.raises(Killed):
        main(f"{MASKS.replace('--n 2', '--n 6')} --seed 3 --out {target}".split())
    monkeypatch.setattr(generate, "write_mask", real_write)
    assert any(name.endswith(".tmp") for name in _files(target))
    assert main(f"{MASKS.replace('--n 2', '--n 6')} --seed 3 --out {target} --resume".split()) == 0
    assert _without_provenance(_files(target)) == _without_provenance(_files(reference))


def test_masks_resume_with_a_smaller_n_keeps_exactly_the_listed_files(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    assert main(f"{MASKS.replace('--n 2', '--n 6')} --out {big}".split()) == 0
    (big / "notes.txt").write_text("mine")  # not the run's: never touched
    assert main(f"{MASKS.replace('--n 2', '--n 3')} --out {big} --resume".split()) == 0
    assert main(f"{MASKS.replace('--n 2', '--n 3')} --out {small}".split()) == 0
    assert sorted(_files(big)) == sorted([*_files(small), "notes.txt"])
    assert _without_provenance({k: v for k, v in _files(big).items() if k != "notes.txt"}) == \
        _without_provenance(_files(small))


def test_build_device_cuda_without_a_gpu(world, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present here")
    before = tree_digest(world)
    assert main(_fill(BUILD + " --device cuda --out {out}/b", world, tmp_path).split()) == 2
    assert capsys.readouterr().err.strip() == ("misato build: error: --device cuda: no CUDA device is available here; "
                                              "use --device cpu")
    assert tree_digest(world) == before and not (tmp_path / "b").exists()
