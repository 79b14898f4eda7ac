"""ASUKA: an MAE prior aligned to a frozen Stable Diffusion inpainting UNet, with an inpainting decoder.

Inference lives here (:mod:`asuka.models`, :mod:`asuka.pipeline`, :mod:`asuka.sd_variants`, :mod:`asuka.assemble`);
training lives in ``asuka.train``, which inference never imports. The classes below are exported lazily so that
``import asuka`` stays cheap; diffusers' ``from_pretrained`` finds the saved components through them.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MAEPrior": "asuka.models.mae",
    "PriorAlignment": "asuka.models.alignment",
    "InpaintingDecoder": "asuka.models.decoder",
    "ASUKAInpaintPipeline": "asuka.pipeline",
    "FluxPriorAlignment": "asuka.models.flux_alignment",
    "NoneFeatures": "asuka.models.flux_alignment",
    "ASUKAFluxFillPipeline": "asuka.flux.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'asuka' has no attribute {name!r}")
