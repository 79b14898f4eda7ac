"""Pure metric functions (no state, no I/O): per-image metrics on uint8 arrays, their batched tensor wrappers,
set metrics on features."""
from evaluate.functional.batched import (
    composite_batch,
    grad_batch,
    mask_ratio_batch,
    psnr_batch,
    quantize,
    ssim_batch,
    to_uint8_images,
    to_uint8_masks,
)
from evaluate.functional.clip_score import clip_score
from evaluate.functional.distribution_metrics import (
    check_ids_pca,
    feature_statistics,
    fid,
    frechet_distance,
    inception_discriminative_scores,
)
from evaluate.functional.image_metrics import composite, grad_error, mask_ratio, psnr, ssim, to_gray
from evaluate.functional.kid import kid

__all__ = [
    "check_ids_pca",
    "clip_score",
    "composite",
    "composite_batch",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "grad_batch",
    "grad_error",
    "inception_discriminative_scores",
    "kid",
    "mask_ratio",
    "mask_ratio_batch",
    "psnr",
    "psnr_batch",
    "quantize",
    "ssim",
    "ssim_batch",
    "to_gray",
    "to_uint8_images",
    "to_uint8_masks",
]
