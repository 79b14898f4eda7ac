"""Building MISATO from raw datasets: readers → CLIP features → selection → crop/resize → masks → layout.

Public entry points: :func:`build` (``misato build``) and :func:`verify` (``misato verify``). Heavy
dependencies (torch, open_clip, sklearn, pycocotools) are imported inside the functions that need them.
"""
from __future__ import annotations

from misato.build.builder import BuildReport, build, collect_sources
from misato.build.verify import verify

__all__ = ["BuildReport", "build", "collect_sources", "verify"]
