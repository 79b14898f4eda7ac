"""Named evaluation protocols: each fixes the feature network, its weights and preprocessing, and IDS's PCA.

Per-image metrics are the same in every protocol: prediction composited into the hole first, per-image PSNR
(MSE + 1e-7), grayscale skimage SSIM, LPIPS-alex v0.1, Grad (see :mod:`evaluate.functional`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from misato.errors import MisatoError


@dataclass(frozen=True)
class Protocol:
    """A named bundle of choices that together define the numbers.

    Attributes:
        name: ``asuka`` or ``comod``.
        feature_network: the extractor kind for FID/IDS (see ``evaluate.features.build_feature_extractor``).
        feature_weights: the weights registry entry of that network.
        preprocess: the route from a uint8 image to the network's input (``evaluate.features.PREPROCESSORS``).
        ids_pca: ``"resolution"`` (PCA to the image side length, e.g. 512) or None (no PCA).
        lpips_net: LPIPS backbone.
        description: one line for humans.
    """

    name: str
    feature_network: str
    feature_weights: str
    preprocess: str
    ids_pca: str | None
    lpips_net: str
    description: str

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def lpips_weights(self) -> tuple[str, str]:
        """Registry entries of the LPIPS backbone and of its v0.1 linear layers."""
        return LPIPS_WEIGHTS[self.lpips_net]


LPIPS_WEIGHTS = {"alex": ("alexnet", "lpips-alex-v0.1"), "vgg": ("vgg16", "lpips-vgg-v0.1")}
"""LPIPS net → (backbone registry name, linear-layer registry name)."""


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="asuka",
            feature_network="torchvision-inception",
            feature_weights="inception-v3-imagenet",
            preprocess="pil-bilinear-342-crop-299",
            ids_pca="resolution",
            lpips_net="alex",
            description="official MISATO scripts: torchvision Inception-v3, PIL uint8 bilinear 342 + crop 299, PCA to the resolution "
            "before the IDS SVM",
        ),
        Protocol(
            name="comod",
            feature_network="fid-inception",
            feature_weights="fid-inception",
            preprocess="tf1-bilinear-299",
            ids_pca=None,
            lpips_net="alex",
            description="Co-Mod-GAN / pytorch-fid convention: TF 2015-12-05 FID Inception, TF1 resize to 299, no PCA",
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a clear error lists the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise MisatoError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def ids_pca_dimensions(protocol: Protocol, option: str | int | None, image_sizes: set[tuple[int, int]]) -> int | None:
    """The PCA size for IDS.

    Args:
        protocol: supplies the default.
        option: ``None`` (protocol default), ``"none"`` (no PCA) or a positive integer.
        image_sizes: the distinct ``(height, width)`` of the ground-truth images.
    """
    if option is None:
        if protocol.ids_pca is None:
            return None
        sides = {max(size) for size in image_sizes}
        if len(sides) != 1:
            raise MisatoError(
                f"protocol {protocol.name!r} sets the IDS PCA size to the image resolution, but the images have "
                f"several sizes {sorted(image_sizes)}; pass --ids-pca N or --ids-pca none"
            )
        return sides.pop()
    if isinstance(option, str):
        if option.strip().lower() == "none":
            return None
        if not option.strip().isdigit():
            raise MisatoError(f"--ids-pca takes a positive integer or 'none', got {option!r}")
        option = int(option)
    if option <= 0:
        raise MisatoError(f"--ids-pca must be positive, got {option}")
    return int(option)
