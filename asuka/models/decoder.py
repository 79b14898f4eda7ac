"""The inpainting decoder: the SD KL-VAE decoder guided by a condition encoder on the masked image.

The condition encoder (``conv3×3`` in → C0, ``conv3×3`` C0 → C1, then stride-2 ``conv4×4`` layers, ReLU between,
features taken before the ReLU) produces one feature map for the input of every decoder up-level and one for the
output of the last level. For SD (``block_out_channels = (128, 256, 512, 512)``) that is 128 and 256 channels at
H, then 512 at H/2, H/4, H/8. At the start of every up-level, and after the last one, the decoder's features are
replaced in the known region: ``h = h·m′ + cond·(1 − m′)`` with ``m′`` the hole mask at that resolution.

Two flavours (one flag): ASUKA's decoder conditions on ``masked image ⊕ mask`` and downsamples the mask by
"any hole → hole" (area > 0); the Asymmetric-VQGAN decoder conditions on the masked image only and downsamples the
mask with nearest neighbour (paper Table 4, "Asy. VAE").

Module names match diffusers (``decoder`` is a diffusers ``Decoder``, ``post_quant_conv`` as in ``AutoencoderKL``),
so SD VAE weights load directly; see :mod:`asuka.convert` for the original Lightning checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def condition_channels(block_out_channels: tuple[int, ...]) -> list[int]:
    """Feature widths of the condition encoder, full resolution first: the last up-level's output width, then the
    input width of every up-level from the highest resolution down (``(128, 256, 512, 512)`` → 128, 256, 512,
    512, 512)."""
    return list(block_out_channels) + [block_out_channels[-1]]


class ConditionEncoder(nn.Module):
    """Masked image (⊕ mask) ``[B, in_channels, H, W]`` → list of features, full resolution first.

    ``layers[0]`` and ``layers[1]`` are 3×3 convolutions at full resolution, the rest 4×4 stride-2 convolutions,
    each halving the resolution (same layout as the Asymmetric-VQGAN condition encoder).
    """

    def __init__(self, in_channels: int, channels: list[int]) -> None:
        super().__init__()
        layers = []
        previous = in_channels
        for index, width in enumerate(channels):
            if index < 2:
                layers.append(nn.Conv2d(previous, width, kernel_size=3, stride=1, padding=1))
            else:
                layers.append(nn.Conv2d(previous, width, kernel_size=4, stride=2, padding=1))
            previous = width
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x if index == 0 else torch.relu(x))
            features.append(x)
        return features


class InpaintingDecoder(ModelMixin, ConfigMixin):
    """KL-VAE decoder with known-region feature replacement.

    Args:
        latent_channels: channels of the latent ``z`` (4 for SD).
        out_channels: image channels (3).
        block_out_channels, layers_per_block, norm_num_groups, act_fn, up_block_types: as in diffusers'
            ``AutoencoderKL`` (the decoder has ``layers_per_block + 1`` resnets per level).
        asymmetric_vqgan: the Asymmetric-VQGAN variant — condition on the masked image only (no mask channel)
            and downsample the mask with nearest neighbour.
        use_post_quant_conv: apply ``post_quant_conv`` (a 1×1 conv on z) first, as ``AutoencoderKL.decode`` does.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        up_block_types: tuple[str, ...] | None = None,
        asymmetric_vqgan: bool = False,
        use_post_quant_conv: bool = True,
    ) -> None:
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        up_block_types = tuple(up_block_types or ("UpDecoderBlock2D",) * len(block_out_channels))
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
        )
        condition_inputs = out_channels if asymmetric_vqgan else out_channels + 1
        self.condition_encoder = ConditionEncoder(condition_inputs, condition_channels(block_out_channels))

    @classmethod
    def from_vae(cls, vae, asymmetric_vqgan: bool = False) -> "InpaintingDecoder":
        """A decoder initialised from an ``AutoencoderKL``'s decoder (and ``post_quant_conv``); the condition
        encoder keeps its fresh initialisation."""
        config = vae.config
        decoder = cls(
            latent_channels=config.latent_channels,
            out_channels=config.out_channels,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            act_fn=config.act_fn,
            up_block_types=tuple(config.up_block_types),
            asymmetric_vqgan=asymmetric_vqgan,
            use_post_quant_conv=vae.post_quant_conv is not None,
        )
        decoder.decoder.load_state_dict(vae.decoder.state_dict())
        if vae.post_quant_conv is not None:
            decoder.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
        return decoder if decoder.dtype == vae.dtype else decoder.to(vae.dtype)

    def downsample_mask(self, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``mask [B, 1, H, W]`` in {0, 1} → ``size``: any hole → hole (ASUKA), or nearest (Asymmetric VQGAN)."""
        if tuple(mask.shape[-2:]) == tuple(size):
            return mask
        if self.config.asymmetric_vqgan:
            return F.interpolate(mask, size=size, mode="nearest")
        return (F.interpolate(mask, size=size, mode="area") > 0).to(mask.dtype)

    def forward(
        self, latents: torch.Tensor, image: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode.

        Args:
            latents: ``[B, latent_channels, H/8, W/8]`` unscaled latents (already divided by the VAE scaling factor).
            image: ``[B, 3, H, W]`` in [−1, 1]; hole pixels are zeroed here, so the full image may be passed.
            mask: ``[B, 1, H, W]``, 1 = hole. Without ``image``/``mask`` this is the plain KL-VAE decoder.
        Returns:
            ``[B, 3, H, W]`` in about [−1, 1].
        """
        if (image is None) != (mask is None):
            raise ValueError("pass both image and mask, or neither")
        decoder = self.decoder
        z = self.post_quant_conv(latents) if self.post_quant_conv is not None else latents
        h = decoder.mid_block(decoder.conv_in(z))
        features: list[torch.Tensor] = []
        if image is not None:
            mask = mask.to(h.dtype)
            masked = image.to(h.dtype) * (1 - mask)
            condition_input = masked if self.config.asymmetric_vqgan else torch.cat([masked, mask], dim=1)
            features = self.condition_encoder(condition_input)
        levels = len(decoder.up_blocks)
        for level, up_block in enumerate(decoder.up_blocks):
            if features:
                h = self._replace_known(h, features[levels - level], mask)
            h = up_block(h)
        if features:
            h = self._replace_known(h, features[0], mask)
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))

    def _replace_known(self, h: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if condition.shape != h.shape:
            raise ValueError(
                f"condition feature {tuple(condition.shape)} does not match decoder feature {tuple(h.shape)}; "
                "image and latent sizes must agree (image = 8 × latent)"
            )
        hole = self.downsample_mask(mask, tuple(h.shape[-2:]))
        return h * hole + condition * (1 - hole)
