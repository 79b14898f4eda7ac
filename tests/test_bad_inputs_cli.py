"""More rows of the reliability sweep (:mod:`tests.test_bad_inputs`): ``misato demo``'s options, ``misato grid
--worst`` with an evaluation run of other data, ``misato weights fetch`` into a file. Each exits 2 with one line
naming the option or path, no traceback, every input byte-identical afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest

from misato.cli import main
from misato.cli_choices import MASK_SIDE_RANGE
from tests.helpers import write_misato_folder, write_predictions
from tests.test_bad_inputs import Case, assert_refused_cleanly, world  # noqa: F401 (world: the fixture)


@pytest.fixture(scope="module")
def inputs(world: Path) -> Path:  # noqa: F811
    """The sweep's inputs plus two evaluation runs scoring images named like ``{in}/gt``'s (4 images, 32 px) that
    are not those images: ``eval_64px`` (the same 4 names at 64 px) and ``eval_2_images`` (2 of the names)."""
    for run, count, size in (("eval_64px", 4, 64), ("eval_2_images", 2, 32)):
        data = write_misato_folder(world / f"{run}_data", n=count, size=size, seed=5)
        write_predictions(data, world / f"{run}_pred")
        assert main(["evaluate", "--pred", str(world / f"{run}_pred"), "--gt", str(data), "--metrics", "psnr",
                     "--out", str(world / run)]) == 0
    return world


DEMO = "demo --out {out}/d"
WORST = "grid --data {in}/gt --runs {in}/telea --worst psnr --out {out}/g.png --eval"
CASES = [
    Case("demo-unknown-mask-preset", DEMO + " --mask-preset nosuch", ("--mask-preset", "'nosuch'")),
    Case("demo-mask-preset-needing-objects", DEMO + " --mask-preset object", ("--mask-preset", "'object'")),
    Case("demo-size-below-the-range", DEMO + " --size 7", ("--size", f"{MASK_SIDE_RANGE[0]} to {MASK_SIDE_RANGE[1]}")),
    Case("demo-huge-size", DEMO + " --size 100000", ("--size", f"{MASK_SIDE_RANGE[0]} to {MASK_SIDE_RANGE[1]}")),
    Case("demo-over-the-memory-limit", DEMO + " --size 2048", ("--size 2048 demo", "MISATO_MEMORY_LIMIT"),
         env={"MISATO_MEMORY_LIMIT": "100M"}),
    Case("demo-negative-seed", DEMO + " --seed -1", ("--seed",)),
    Case("grid-worst-eval-of-other-sizes", WORST + " {in}/eval_64px",
         ("--eval {in}/eval_64px is an evaluation of other data", "images of 64x64, the data's are 32x32")),
    Case("grid-worst-eval-of-fewer-images", WORST + " {in}/eval_2_images",
         ("--eval {in}/eval_2_images is an evaluation of other data", "2 image(s), the data has 4")),
    Case("weights-fetch-into-a-file", "weights fetch big-lama-torchscript --weights-dir {in}/random.bin",
         ("--weights-dir {in}/random.bin is a file, not a folder",)),
    Case("demo-weights-dir-a-file", DEMO + " --weights-dir {in}/random.bin", ("--weights-dir {in}/random.bin is a file",)),
    Case("evaluate-weights-dir-a-file", "evaluate --pred {in}/pred --gt {in}/gt --metrics psnr,lpips --weights-dir {in}/random.bin --out {out}/e",
         ("--weights-dir {in}/random.bin is a file",)),
    Case("fid-weights-env-dir-a-file", "fid {in}/pred {in}/gt/image", ("$MISATO_WEIGHTS_DIR {in}/random.bin is a file",),
         env={"MISATO_WEIGHTS_DIR": "{in}/random.bin"}),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_exit_2_one_line_naming_it_inputs_untouched(case, inputs, tmp_path, capsys, monkeypatch):
    assert_refused_cleanly(case, inputs, tmp_path, capsys, monkeypatch)
