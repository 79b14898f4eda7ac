"""``misato inpaint`` under a 2-process gloo group (as torchrun starts it) writes what one process writes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from baselines.base import InpaintingMethod
from misato.cli import main
from misato.errors import MisatoError
from tests.helpers import write_misato_folder

REPO = Path(__file__).resolve().parents[2]


class FailsOnRank1(InpaintingMethod):
    """Copies the image on rank 0; refuses every image on rank 1 (a method failing on one rank only)."""

    name = "fails-on-rank-1"

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        if os.environ.get("RANK") == "1":
            raise MisatoError("rank 1's method refuses")
        return image.copy()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_ranks(*argv: str) -> list[subprocess.CompletedProcess]:
    """``python -m misato ARGV`` as ranks 0 and 1 of one group (the environment torchrun sets)."""
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes.append(subprocess.Popen([sys.executable, "-m", "misato", *argv], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_two_gloo_ranks_write_the_same_files_as_one_process_and_resume(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=7, size=32)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(["inpaint", "--method", "telea", "--data", str(data), "--out", str(single)]) == 0
    argv = ["inpaint", "--method", "telea", "--data", str(data), "--out", str(sharded)]
    for result in run_two_ranks(*argv):
        assert result.returncode == 0, result.stderr
    assert files(sharded) == files(single) and len(files(single)) == 7
    record = json.loads((sharded / "run.json").read_text())
    assert record["complete"] and record["computed"] == 7 and record["computed_per_rank"] == [4, 3]
    # a killed sharded run: outputs of both ranks missing, record unfinished; resumed by two ranks again
    for name in ("0001.png", "0002.png", "0006.png"):
        (sharded / name).unlink()
    (sharded / "run.json").write_text(json.dumps({**record, "complete": False}))
    for result in run_two_ranks(*argv, "--resume"):
        assert result.returncode == 0, result.stderr
    assert files(sharded) == files(single)
    record = json.loads((sharded / "run.json").read_text())
    assert record["complete"] and record["computed"] == 3 and record["computed_per_rank"] == [2, 1]


def test_a_refusal_on_rank_0_stops_both_ranks(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    out = tmp_path / "pred"
    assert main(["inpaint", "--method", "telea", "--data", str(data), "--out", str(out)]) == 0
    results = run_two_ranks("inpaint", "--method", "telea", "--data", str(data), "--out", str(out))
    assert [r.returncode for r in results] == [2, 2], [r.stderr[-2000:] for r in results]
    assert "holds a run recorded as complete" in results[0].stderr and "rank 0 stopped" in results[1].stderr


def test_a_method_failing_on_rank_1_stops_both_and_keeps_rank_0s_outputs(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=4, size=32)
    out = tmp_path / "pred"
    results = run_two_ranks("inpaint", "--method", "tests.baselines.test_sharding:FailsOnRank1", "--data", str(data),
                            "--out", str(out))
    assert [r.returncode for r in results] == [2, 2], [r.stderr[-2000:] for r in results]
    assert "rank 1 stopped: rank 1's method refuses" in results[0].stderr
    assert "rank 1's method refuses" in results[1].stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["0000.png", "0002.png"]  # rank 0's share
    assert json.loads((out / "run.json").read_text())["complete"] is False
