"""Mask generators (LaMa, Co-Mod-GAN/MAT, rectangles, object silhouettes, the ASUKA/MISATO mixtures).

In memory every mask is boolean ``[size, size]`` with **True = hole**; on disk 8-bit PNG with 255 = hole.

    gen = make_generator("misato", 512, objects="instances_val2014.json")
    mask, kinds = gen.sample(np.random.default_rng(0))
    generate_masks("lama-thick-512", n=1000, size=512, seed=0, out="masks/")
    mask_stats("masks/")
"""
from __future__ import annotations

from misato.masks.generate import generate_masks, mask_rng
from misato.masks.presets import PRESETS, MaskGenerator, make_generator
from misato.masks.stats import check_stats_path, format_stats, mask_stats, write_stats

__all__ = ["PRESETS", "MaskGenerator", "format_stats", "generate_masks", "make_generator", "mask_rng",
           "check_stats_path", "mask_stats", "write_stats"]
