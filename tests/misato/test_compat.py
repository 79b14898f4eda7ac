"""Detecting Hugging Face's `evaluate`, which shares our evaluator's top-level package name."""
import sys
import types
from importlib import metadata

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
