"""Option values the ``misato`` subcommands offer, spelled out here so that building the parser imports nothing
from ``evaluate`` (``misato --help`` stays fast and works beside Hugging Face's ``evaluate``). A test checks them
against their sources, :data:`evaluate.protocols.PROTOCOLS` and :data:`evaluate.metric_info.ALL_METRICS`."""
from __future__ import annotations

PROTOCOL_CHOICES = ("asuka", "comod")
PROTOCOL_HELP = ("asuka: the official MISATO scripts (torchvision Inception-v3, PIL resize 342 + crop 299, IDS PCA to "
                 "the resolution); comod: Co-Mod-GAN / pytorch-fid convention (TF FID Inception, TF1 resize, no PCA)")
METRIC_NAMES = ("psnr", "ssim", "lpips", "fid", "uids", "pids", "grad", "kid", "clip")
