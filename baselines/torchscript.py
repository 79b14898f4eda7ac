"""Any network called as ``net(image, mask) -> image`` on tensors, and the ``torchscript`` method around a file.

:class:`TensorInpainter` is the one conversion path from the runner's arrays to such a network and back, shared by
``torchscript`` (any exported model, e.g. IOPaint's ``big-lama.pt``) and the native ``lama`` adapter:

1. image ``uint8 [H, W, 3]`` → float32 ``[1, 3, H, W]`` in [0, 1] (or [−1, 1] with ``input_range="-1,1"``);
   mask True = hole → float32 ``[1, 1, H, W]`` in {0, 1} with 1 = hole (or 1 = known with ``mask_polarity="known"``);
2. both padded at the bottom and right by symmetric reflection to a multiple of ``pad_multiple`` (as LaMa's
   ``pad_img_to_modulo``; the mask is reflected too);
3. the network's output (same range as its input) is cropped back and quantised as upstream: [0, 1] as LaMa and
   IOPaint (``clip(x · 255, 0, 255)`` truncated), [−1, 1] as StyleGAN/MAT (``clip(x · 127.5 + 128)`` truncated);
4. known pixels are copied from the input (paste-back), so they are untouched bit for bit.

Images of one size in a batch go through the network together. An image without hole is returned unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from baselines.base import (DEVICE_OPTION, WEIGHTS_OPTION, InpaintingMethod, MethodOption, check_device, checked_hole,
                            register_method)
from baselines.signed_io import pad_symmetric, paste_back
from misato.errors import MisatoError

INPUT_RANGES = ("0,1", "-1,1")
MASK_POLARITIES = ("hole", "known")


class TensorInpainter(InpaintingMethod):
    """Runs ``net(image [N, 3, H, W], mask [N, 1, H, W]) -> image [N, 3, H, W]`` (see the module docstring).

    Args:
        net: a torch module or TorchScript module, put in eval mode here.
        name: the method name recorded in ``run.json``.
        input_range: ``"0,1"`` or ``"-1,1"``: the range of the image the network takes and returns.
        mask_polarity: ``"hole"`` (1 = hole, LaMa/IOPaint) or ``"known"`` (1 = known pixel).
        pad_multiple: pad height and width up to a multiple of this (1 = no padding).
        device: torch device.
        record: extra entries for :meth:`describe` (weights file, hash, origin).
    """

    def __init__(self, net, name: str, input_range: str = "0,1", mask_polarity: str = "hole", pad_multiple: int = 8,
                 device: str = "cpu", record: dict[str, Any] | None = None) -> None:
        if input_range not in INPUT_RANGES:
            raise MisatoError(f"--input-range must be one of {', '.join(INPUT_RANGES)}, got {input_range!r}")
        if mask_polarity not in MASK_POLARITIES:
            raise MisatoError(f"--mask-polarity must be one of {', '.join(MASK_POLARITIES)}, got {mask_polarity!r}")
        if pad_multiple < 1:
            raise MisatoError(f"--pad-multiple must be at least 1, got {pad_multiple}")
        self.device = check_device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.input_range = input_range
        self.mask_polarity = mask_polarity
        self.pad_multiple = int(pad_multiple)
        self.record = dict(record or {})

    def to_tensors(self, images: list[np.ndarray], holes: list[np.ndarray]):
        """Padded network inputs for images of one size: ``([N, 3, H', W'], [N, 1, H', W'])`` float32."""
        import torch

        image = np.stack([pad_symmetric(i, self.pad_multiple) for i in images])
        hole = np.stack([pad_symmetric(h, self.pad_multiple) for h in holes])
        image = torch.from_numpy(image).to(self.device).permute(0, 3, 1, 2).contiguous().float() / 255
        if self.input_range == "-1,1":
            image = image * 2 - 1
        mask = torch.from_numpy(hole if self.mask_polarity == "hole" else ~hole)[:, None].to(self.device).float()
        return image, mask

    def from_tensor(self, output, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """Crop, quantise (as upstream, see the module docstring) and paste the known pixels back."""
        import torch

        height, width = holes[0].shape
        expected = (len(images), 3)
        if output.ndim != 4 or tuple(output.shape[:2]) != expected or output.shape[2] < height or output.shape[3] < width:
            raise MisatoError(f"{self.name}: the network returned a tensor of shape {tuple(output.shape)}, expected "
                              f"[{len(images)}, 3, {height + -height % self.pad_multiple}, "
                              f"{width + -width % self.pad_multiple}]")
        if self.input_range == "-1,1":  # StyleGAN/MAT's x * 127.5 + 128, truncated: rounds to nearest
            pixels = (output * 127.5 + 128).clamp(0, 255)
        else:  # LaMa/IOPaint's clip(x * 255) truncated
            pixels = (output * 255).clamp(0, 255)
        pixels = pixels.permute(0, 2, 3, 1).to(torch.uint8)
        return [paste_back(filled, image, hole) for image, hole, filled in zip(images, holes, pixels.cpu().numpy())]

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """Fill a batch; images of one size are stacked into one forward pass."""
        import torch

        holes = [checked_hole(self.name, image, mask) for image, mask in zip(images, masks)]
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (image, hole) in enumerate(zip(images, holes)):
            if hole.any():
                groups.setdefault(hole.shape, []).append(index)
            else:
                results[index] = image.copy()
        with torch.inference_mode():
            for indices in groups.values():
                group_images, group_holes = [images[i] for i in indices], [holes[i] for i in indices]
                output = self.net(*self.to_tensors(group_images, group_holes))
                for index, result in zip(indices, self.from_tensor(output, group_images, group_holes)):
                    results[index] = result
        return results

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        return self.inpaint([image], [mask], [seed])[0]

    def describe(self) -> dict[str, Any]:
        import torch

        return {
            "method": self.name,
            **self.record,
            "input_range": self.input_range,
            "mask_polarity": self.mask_polarity,
            "padding": f"symmetric, bottom/right, to a multiple of {self.pad_multiple}; cropped back",
            "quantisation": ("x*127.5+128" if self.input_range == "-1,1" else "x*255") + ", clipped to 0..255, "
            "truncated to uint8; known pixels pasted back",
            "device": str(self.device),
            "torch": torch.__version__,
        }


def load_torchscript(path: str | os.PathLike, device: str = "cpu"):
    """``torch.jit.load`` with a clear error for a file that is not a TorchScript archive."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise MisatoError(f"--weights {path}: no such file")
    try:
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MisatoError(f"--weights {path}: not a TorchScript file ({first_line})") from None


def weights_record(path: Path, origin: str, sha256: str | None = None) -> dict[str, Any]:
    """What ``run.json`` records about a weight file: path, sha256 (computed unless given) and how it was found."""
    from misato.weights import file_sha256

    return {"weights": str(path.resolve()), "weights_sha256": sha256 or file_sha256(path), "weights_origin": origin}


def explicit_or_located(weights: str | os.PathLike | None, locate: Callable[[], tuple[Path, str] | None],
                        missing: Callable[[str], str]) -> tuple[Path, str]:
    """``(path, origin)`` of a method's weights: ``weights`` as given (origin ``"explicit"``) or what ``locate()``
    finds in the searched folders.

    Raises:
        MisatoError: neither; the message is ``missing(folders)``, ``folders`` naming the searched folders.
    """
    from misato.weights import search_dirs

    if weights is not None:
        return Path(weights).expanduser(), "explicit"
    found = locate()
    if found is None:
        raise MisatoError(missing(", ".join(str(d) for d in search_dirs())))
    return found


def torchscript_method(weights: str | None = None, input_range: str = "0,1", mask_polarity: str = "hole",
                       pad_multiple: int = 8, device: str = "cpu") -> TensorInpainter:
    """The ``torchscript`` method: an exported ``f(image, mask) -> image`` read from ``--weights FILE``."""
    if weights is None:
        raise MisatoError("method torchscript needs --weights FILE (a TorchScript archive, e.g. big-lama.pt)")
    check_device(device)
    net = load_torchscript(weights, device)
    return TensorInpainter(net, "torchscript", input_range, mask_polarity, pad_multiple, device,
                           record=weights_record(Path(weights).expanduser(), "explicit"))


register_method(
    "torchscript",
    torchscript_method,
    options=(
        WEIGHTS_OPTION,
        MethodOption("input_range", str, "image range the network takes and returns", INPUT_RANGES, "0,1"),
        MethodOption("mask_polarity", str, "what a 1 in the network's mask means", MASK_POLARITIES, "hole"),
        MethodOption("pad_multiple", int, "pad height and width to a multiple of this (1 = none)", default=8,
                     bounds=(1, 4096)),
        DEVICE_OPTION,
    ),
    description="any exported f(image [1,3,H,W], mask [1,1,H,W]) -> image (TorchScript file given by --weights)",
)
