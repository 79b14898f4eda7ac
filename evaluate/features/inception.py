"""torchvision Inception-v3 (ImageNet IMAGENET1K_V1) as the official MISATO scripts use it (protocol ``asuka``).

Preprocessing follows ``Inception_V3_Weights.IMAGENET1K_V1.transforms()``: resize the short side to 342
(bilinear, antialiased), centre-crop 299, ImageNet mean/std; the network then applies ``transform_input=True``.
The classifier is replaced by the identity, so the output is the 2048-d average-pool vector.
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchvision.models import inception_v3

from evaluate.features.common import check_images, fold_batch_norms
from misato.checkpoint import load_strict, read_state_dict

RESIZE_SHORT_SIDE = 342
CROP_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def official_architecture() -> nn.Module:
    """torchvision's Inception-v3 exactly as the official file was saved (aux classifier, 1000-way fc)."""
    return inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)


class TorchvisionInceptionFeatures(nn.Module):
    """x float32 [N, 3, H, W] RGB in [0, 1] (any H, W) -> float32 [N, 2048] average-pool features.

    Attributes:
        weights: {registry name: sha256} of the loaded file.
    """

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

    def preprocess(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 3, 299, 299] ImageNet-normalised."""
        images = TF.resize(images, [RESIZE_SHORT_SIDE], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        images = TF.center_crop(images, [CROP_SIZE, CROP_SIZE])
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        check_images(images)
        features = self.network(self.preprocess(images))
        return features.float()


def load_torchvision_inception(path, source: str, weights: dict[str, str]) -> TorchvisionInceptionFeatures:
    """Build the extractor from an official-format file (``inception_v3_google-0cc3c7bd.pth`` layout)."""
    return TorchvisionInceptionFeatures(read_state_dict(path), source, weights)
