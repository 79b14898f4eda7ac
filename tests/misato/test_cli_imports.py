"""Import hygiene, measured in fresh interpreters: what `misato --help`, `misato compare` and `import evaluate` load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.evaluate.test_compare import write_run

ROOT = Path(__file__).resolve().parents[2]
WATCHED = ("torch", "cv2", "sklearn", "scipy.stats", "evaluate.evaluator", "evaluate.features")

CLI = """
import json, sys
from misato.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps(sorted(m for m in {watched} if m in sys.modules)), file=sys.stderr)
"""


def _loaded(code: str, *args: str) -> list[str]:
    """Run ``code`` in a new interpreter; its last stderr line lists the loaded :data:`WATCHED` modules (JSON)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code.format(watched=WATCHED), *args], capture_output=True,
                            text=True, env=env, cwd=ROOT, check=True)
    return json.loads(result.stderr.strip().splitlines()[-1])


def test_help_loads_neither_opencv_nor_torch():
    assert _loaded(CLI, "--help") == []


def test_compare_does_not_import_torch(tmp_path):
    """Nor scipy.stats (seconds to import), which only the paired tests of two or more runs need."""
    run = write_run(tmp_path, "run", {"psnr": np.linspace(20, 24, 12)})
    assert _loaded(CLI, "compare", str(run), "--out", str(tmp_path / "t.md"), "--reported", "places2") == []
    assert (tmp_path / "t.md").is_file()


def test_import_evaluate_is_light_and_loads_names_on_first_use():
    report = "print(json.dumps(sorted(m for m in {watched} if m in sys.modules)), file=sys.stderr)"
    assert _loaded("import evaluate, json, sys\n" + report) == []
    assert _loaded("import evaluate, json, sys\nevaluate.get_protocol('asuka')\n" + report) == []
    first_use = _loaded("import evaluate, json, sys\nevaluate.evaluate_folder\n" + report)
    assert {"torch", "evaluate.evaluator"} <= set(first_use)


def test_lazy_names_are_listed_and_unknown_names_fail():
    import evaluate

    assert {"evaluate_folder", "get_protocol", "PROTOCOLS"} <= set(dir(evaluate)) and "get_protocol" in evaluate.__all__
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        evaluate.nope
