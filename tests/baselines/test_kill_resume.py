"""``misato inpaint`` killed with SIGKILL at several points, then resumed, writes the bytes of an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from baselines.opencv import OpenCVInpaint
from misato.cli import main
from misato.io import list_images, read_image
from tests.helpers import write_misato_folder

REPO = Path(__file__).resolve().parents[2]


class SlowTelea(OpenCVInpaint):
    """Telea, 0.2 s per image: slow enough to be killed mid-run. Records itself as telea (same pixels)."""

    def __init__(self) -> None:
        super().__init__("telea")

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        time.sleep(0.2)
        return super().inpaint_one(image, mask, seed)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_killed_at_several_points_and_resumed_gives_the_same_bytes(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=12, size=48)
    reference = tmp_path / "reference"
    assert main(["inpaint", "--method", "telea", "--data", str(data), "--out", str(reference)]) == 0
    for kill_after in (1, 5):
        out = tmp_path / f"killed-{kill_after}"
        argv = [sys.executable, "-m", "misato", "inpaint", "--method", "tests.baselines.test_kill_resume:SlowTelea",
                "--data", str(data), "--out", str(out)]
        process = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.png"))) < kill_after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        written = list_images(out)
        assert kill_after <= len(written) < 12  # killed mid-run
        for path in written.values():  # every file present is complete (atomic writes)
            assert read_image(path).shape == (48, 48, 3)
        (out / ".0011.png.abc123.tmp").write_bytes(b"a write cut short")  # as a kill inside atomic_write_bytes leaves
        assert main(["inpaint", "--method", "telea", "--data", str(data), "--out", str(out), "--resume"]) == 0
        assert files(out) == files(reference)
        assert not list(out.glob(".*.tmp"))
