"""torchvision Inception-v3 (ImageNet IMAGENET1K_V1) as the official MISATO scripts use it (protocol ``asuka``).

The official ``cal_ids.py`` applies ``Inception_V3_Weights.DEFAULT.transforms()`` to a **PIL uint8 image**, so the
protocol's preprocessing is route :data:`PREPROCESS` (see :func:`prepare_pil`), done on the CPU on the uint8
image: PIL bilinear resize of the short side to 342 (the long side to ``int(342·long/short)``, torchvision's
rule), centre crop 299 (offsets ``round((size − 299)/2)``); then, on the network's device,
``x/255``, ImageNet mean/std, and the network's own ``transform_input=True``. The classifier is replaced by the
identity, so the output is the 2048-d average-pool vector.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.models import inception_v3

from evaluate.features.common import check_images, fold_batch_norms
from evaluate.functional.batched import quantize
from misato.checkpoint import load_strict, read_state_dict

PREPROCESS = "pil-bilinear-342-crop-299"
"""Name of this preprocessing route in the protocol table."""
RESIZE_SHORT_SIDE = 342
CROP_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def official_architecture() -> nn.Module:
    """torchvision's Inception-v3 exactly as the official file was saved (aux classifier, 1000-way fc)."""
    return inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)


def prepare_pil(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` RGB → ``uint8 [3, 299, 299]``: PIL bilinear short side to 342, centre crop 299.

    The same pixels as torchvision's ``Resize(342)`` + ``CenterCrop(299)`` on a PIL image (PIL's bilinear filter
    widens with the scale, i.e. it is antialiased when shrinking). Runs on the CPU (DataLoader workers).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = RESIZE_SHORT_SIDE, int(RESIZE_SHORT_SIDE * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    picture = Image.fromarray(image)
    if (new_h, new_w) != (height, width):
        picture = picture.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - CROP_SIZE) / 2.0))
    left = int(round((new_w - CROP_SIZE) / 2.0))
    cropped = np.asarray(picture)[top : top + CROP_SIZE, left : left + CROP_SIZE]
    return torch.from_numpy(np.ascontiguousarray(cropped.transpose(2, 0, 1)))


class TorchvisionInceptionFeatures(nn.Module):
    """The 2048-d average-pool features of torchvision's Inception-v3.

    - ``forward_prepared(x)``: x uint8 [N, 3, 299, 299] from :func:`prepare_pil` (any device) → float32 [N, 2048].
    - ``forward(images)``: images float32 [N, 3, H, W] in [0, 1] → float32 [N, 2048]; they are quantised to
      uint8 first (:func:`quantize`), as the protocol works on 8-bit images, then prepared image by image.

    Attributes:
        preprocess_route: :data:`PREPROCESS`.
        weights: {registry name: sha256} of the loaded file.
    """

    preprocess_route = PREPROCESS

    def __init__(self, state_dict: dict[str, Tensor], source: str, weights: dict[str, str]) -> None:
        super().__init__()
        with torch.device("meta"):  # no random initialisation: every tensor comes from the file
            network = official_architecture()
        load_strict(network, state_dict, source)
        network.AuxLogits = None  # only used in training mode; dropped so eval can never touch it
        network.aux_logits = False
        network.fc = nn.Identity()
        self.network = fold_batch_norms(network.eval())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.weights = dict(weights)
        self.requires_grad_(False)
        self.eval()

    def forward_prepared(self, prepared: Tensor) -> Tensor:
        if prepared.dtype != torch.uint8 or prepared.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected uint8 [N, 3, 299, 299], got {prepared.dtype} {tuple(prepared.shape)}")
        x = prepared.to(self.mean.device).float().div_(255.0)
        x = x.sub_(self.mean).div_(self.std).contiguous(memory_format=torch.channels_last)
        return self.network(x).float()

    def forward(self, images: Tensor) -> Tensor:
        check_images(images)
        pixels = quantize(images).permute(0, 2, 3, 1).cpu().numpy()
        return self.forward_prepared(torch.stack([prepare_pil(image) for image in pixels]))


def load_torchvision_inception(path, source: str, weights: dict[str, str]) -> TorchvisionInceptionFeatures:
    """Build the extractor from an official-format file (``inception_v3_google-0cc3c7bd.pth`` layout)."""
    return TorchvisionInceptionFeatures(read_state_dict(path, "torchvision Inception-v3"), source, weights)
