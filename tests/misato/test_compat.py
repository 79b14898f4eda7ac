"""Detecting Hugging Face's `evaluate`, which shares our evaluator's top-level package name."""
import os
import shutil
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from misato import compat
from misato.errors import MisatoError


def test_our_evaluator_imports_when_alone():
    assert getattr(compat.import_evaluator(), "__misato__", False)
    assert not compat.hf_evaluate_installed()


def test_hf_distribution_is_detected(monkeypatch):
    real = metadata.distribution

    def fake(name):
        return object() if name == "evaluate" else real(name)

    monkeypatch.setattr(compat.metadata, "distribution", fake)
    assert compat.hf_evaluate_installed()


def test_foreign_evaluate_module_is_named_in_the_error(monkeypatch):
    foreign = types.ModuleType("evaluate")
    foreign.__file__ = "/site-packages/evaluate/__init__.py"
    monkeypatch.setitem(sys.modules, "evaluate", foreign)
    with pytest.raises(MisatoError, match="Hugging Face.*separate virtual environment.*site-packages/evaluate"):
        compat.import_evaluator()


def test_clash_classification(monkeypatch):
    assert not compat.is_evaluator_clash(ImportError("x", name="evaluate"))  # HF evaluate is not installed here
    real = metadata.distribution
    monkeypatch.setattr(compat.metadata, "distribution", lambda name: object() if name == "evaluate" else real(name))
    assert compat.is_evaluator_clash(ImportError(compat.HF_EVALUATE_MESSAGE, name="evaluate"))
    assert compat.is_evaluator_clash(ModuleNotFoundError("No module named 'evaluate.compare'", name="evaluate.compare"))
    assert not compat.is_evaluator_clash(ModuleNotFoundError("No module named 'lpips'", name="lpips"))
    assert not compat.is_evaluator_clash(ModuleNotFoundError("No module named 'evaluated'", name="evaluated"))


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hf_site(tmp_path_factory) -> Path:
    """A folder holding a stand-in for Hugging Face's `evaluate`: a distribution of that name and its package."""
    site = tmp_path_factory.mktemp("hf-site")
    (site / "evaluate-0.4.3.dist-info").mkdir()
    metadata_file = site / "evaluate-0.4.3.dist-info" / "METADATA"
    metadata_file.write_text("Metadata-Version: 2.1\nName: evaluate\nVersion: 0.4.3\n")
    (site / "evaluate").mkdir()
    (site / "evaluate" / "__init__.py").write_text("def load(path):\n    raise NotImplementedError\n")
    return site


def _run_misato(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, "-m", "misato", *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("order", ["ours first", "hf first", "hf broken"])
@pytest.mark.parametrize("command", ["compare", "demo", "evaluate", "grid", "train"])
def test_every_evaluate_subcommand_reports_the_clash_in_one_line(hf_site, tmp_path, order, command):
    """Hugging Face's `evaluate` installed: exit 2 with the one-line message, whichever package Python finds first."""
    arguments = {
        "compare": ["compare", str(tmp_path / "run"), "--out", "-"],
        "demo": ["demo", "--out", str(tmp_path / "demo")],
        "evaluate": ["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--out", str(tmp_path / "o")],
        "grid": ["grid", "--data", str(tmp_path), "--runs", str(tmp_path), "--out", str(tmp_path / "o" / "g.png")],
        "train": ["train", "decoder", "--out", str(tmp_path / "o")],
    }[command]
    site = hf_site
    if order == "hf broken":  # HF's package failing on a dependency of its own
        site = tmp_path / "broken-site"
        shutil.copytree(hf_site, site)
        (site / "evaluate" / "__init__.py").write_text("import datasets_not_installed_here\n")
    result = _run_misato(arguments, [ROOT, site] if order == "ours first" else [site, ROOT], tmp_path)
    assert (result.returncode, result.stderr) == (2, f"misato {command}: error: {compat.HF_EVALUATE_MESSAGE}\n")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "o").exists()


def test_commands_without_the_evaluator_run_beside_hf_evaluate(hf_site, tmp_path):
    masks = ["masks", "--preset", "rect", "--n", "2", "--size", "32", "--out", str(tmp_path / "masks")]
    for arguments in (["--help"], ["compare", "--help"], ["masks", "--help"], masks):
        result = _run_misato(arguments, [hf_site, ROOT], tmp_path)
        assert result.returncode == 0, (arguments, result.stderr)
    assert (tmp_path / "masks" / "masks.csv").is_file()


def test_an_evaluate_import_error_in_any_subcommand_is_the_clash(monkeypatch, capsys, tmp_path):
    """The safety net: a subcommand missing from EVALUATE_COMMANDS that imports `evaluate` still exits 2."""
    from misato import cli

    real = metadata.distribution
    monkeypatch.setattr(compat.metadata, "distribution", lambda name: object() if name == "evaluate" else real(name))
    monkeypatch.setattr(cli, "EVALUATE_COMMANDS", frozenset())
    foreign = types.ModuleType("evaluate")  # Hugging Face's package, found first: no `evaluate.compare`
    monkeypatch.setitem(sys.modules, "evaluate", foreign)
    for name in [m for m in sys.modules if m.startswith("evaluate.")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["compare", str(tmp_path), "--out", "-"]) == 2
    assert capsys.readouterr().err == f"misato compare: error: {compat.HF_EVALUATE_MESSAGE}\n"
    monkeypatch.setattr(compat.metadata, "distribution", real)
    with pytest.raises(ModuleNotFoundError):  # without HF's package it is an ordinary internal error
        cli.main(["compare", str(tmp_path), "--out", "-"])
