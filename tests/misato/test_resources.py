"""Memory limits: the override, psutil, /proc/meminfo, and the refusal message."""
from __future__ import annotations

import sys

import pytest

from misato import resources
from misato.errors import MisatoError


@pytest.mark.parametrize("text, expected", [("6G", 6 * 2**30), ("512m", 512 * 2**20), ("1.5GiB", 3 * 2**29),
                                            ("8000000000", 8_000_000_000), (" 2 T ", 2 * 2**40), ("10KB", 10240)])
def test_parse_bytes(text, expected):
    assert resources.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "6X"])
def test_parse_bytes_refuses_what_is_not_a_size(text):
    with pytest.raises(MisatoError, match="MISATO_MEMORY_LIMIT"):
        resources.parse_bytes(text)


def test_limit_sources_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "3G")
    assert resources.memory_limit() == (3 * 2**30, "$MISATO_MEMORY_LIMIT")
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV)
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: /proc/meminfo
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    2000000 kB\n")
    real_path = resources.Path
    monkeypatch.setattr(resources, "Path", lambda p: meminfo if p == "/proc/meminfo" else real_path(p))
    assert resources.memory_limit() == (2_000_000 * 1024, "MemAvailable in /proc/meminfo")
    meminfo.write_text("nothing useful\n")
    assert resources.memory_limit() is None


def test_check_memory_says_the_estimate_and_the_limit(monkeypatch):
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    resources.check_memory(2**30, "exactly the limit")
    with pytest.raises(MisatoError, match=r"^--size 9 masks needs about 1\.5 GB of memory but the limit is 1\.0 GB "
                                          r"\(\$MISATO_MEMORY_LIMIT\);"):
        resources.check_memory(3 * 2**29, "--size 9 masks")


def test_option_messages_name_the_keyword_in_python_and_the_flag_on_the_command_line():
    from misato.masks import make_generator

    with pytest.raises(MisatoError) as caught:
        make_generator("misato", 32)
    assert "pass objects= with" in str(caught.value)
    assert "pass --mask-objects with" in caught.value.for_flags({"objects": "--mask-objects"})
