"""Losses of the inpainting-decoder stage: L1 + LPIPS reconstruction and a hinge PatchGAN with adaptive weight.

This is the loss of latent diffusion's ``LPIPSWithDiscriminator`` as Asymmetric VQGAN configures it
(``disc_weight 0.8``, ``kl_weight 1e-6``, hinge loss, a 3-layer PatchGAN), rewritten for a decoder trained behind a
frozen encoder:

- reconstruction ``L_rec = mean|x − x̂| + w_p · mean LPIPS(x, x̂)`` on images in [−1, 1]. latent diffusion sums
  ``|x − x̂| + LPIPS`` over pixels and divides by the batch; the mean is that divided by ``C·H·W``, the same
  balance of the two terms, and the adaptive weight below makes the GAN term invariant to that scale. Its learnt
  ``logvar`` is not in any optimiser there (it stays 0), so it is left out here.
- generator ``L = L_rec + λ · L_G`` with ``L_G = −mean D(x̂)`` and, from ``disc_start`` on,
  ``λ = disc_weight · clamp(‖∇_w L_rec‖ / (‖∇_w L_G‖ + 1e-4), 0, 1e4)`` (detached), ``w`` the decoder's last
  layer (``conv_out.weight``); before ``disc_start`` ``λ = 0`` and the discriminator is not trained.
- discriminator ``L_D = ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))`` (hinge).
- **no KL term**: latent diffusion's ``KL(q(z|x) ‖ N(0, I))`` is a function of the encoder's posterior only. The
  encoder is frozen in this stage, so its gradient with respect to every trained parameter is zero and
  ``kl_weight · KL`` would only add a constant to the logged loss; it regularises nothing here and is dropped.

The discriminator is taming-transformers' ``NLayerDiscriminator`` (pix2pix PatchGAN) with the same module layout
(``main.<i>``), BatchNorm, no bias before a norm, and ``weights_init`` (conv ~ N(0, 0.02), BN weight ~ N(1, 0.02)).
LPIPS comes from :func:`evaluate.features.lpips.build_lpips` (registry weights; VGG16 as in latent diffusion by
default), frozen, evaluated on [−1, 1] inputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ADAPTIVE_WEIGHT_MAX = 1e4
ADAPTIVE_WEIGHT_EPS = 1e-4


class NLayerDiscriminator(nn.Module):
    """PatchGAN ``[B, in_channels, H, W]`` (images in [−1, 1]) → logits ``[B, 1, H/2^n − 2, W/2^n − 2]``.

    ``n_layers`` stride-2 4×4 convolutions (``ndf · min(2^i, 8)`` channels), one stride-1 4×4 convolution with
    ``ndf · min(2^n, 8)`` channels, then a stride-1 4×4 convolution to one logit per patch; LeakyReLU(0.2) and
    BatchNorm between (no norm after the first convolution).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for index in range(1, n_layers + 1):
            new = ndf * min(2 ** index, 8)
            stride = 2 if index < n_layers else 1
            layers += [nn.Conv2d(width, new, 4, stride, 1, bias=False), nn.BatchNorm2d(new), nn.LeakyReLU(0.2, True)]
            width = new
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """taming's ``weights_init``: conv weights ~ N(0, 0.02), BatchNorm weight ~ N(1, 0.02) and bias 0 (conv
        biases keep PyTorch's default initialisation); draws from torch's default generator."""
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                layer.weight.normal_(0.0, 0.02)
            elif isinstance(layer, nn.BatchNorm2d):
                layer.weight.normal_(1.0, 0.02)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``½ (mean relu(1 − real) + mean relu(1 + fake))``, a scalar ≥ 0 (0 once real ≥ 1 and fake ≤ −1)."""
    return 0.5 * (torch.relu(1.0 - logits_real).mean() + torch.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float = 0.8) -> Tensor:
    """``disc_weight · clamp(‖∇ rec_loss‖ / (‖∇ g_loss‖ + 1e-4), 0, 1e4)``, gradients with respect to
    ``last_layer``; a detached scalar. Both graphs are retained for the backward pass that follows."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    ratio = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(g_grad) + ADAPTIVE_WEIGHT_EPS)
    return torch.clamp(ratio, 0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight


@dataclass(frozen=True)
class DecoderLossConfig:
    """Weights of :class:`DecoderLoss` (paper / Asymmetric-VQGAN values where they are given).

    ``disc_start``: the first step with the adversarial term. Asymmetric VQGAN trains from scratch and starts at
    50,001; ASUKA fine-tunes an already adversarially trained decoder for 50K steps, and the paper does not say
    when its discriminator starts, so the default here is 0 (from the first step).
    """

    perceptual_weight: float = 1.0
    disc_weight: float = 0.8
    disc_start: int = 0
    lpips_net: str = "vgg"
    disc_layers: int = 3
    disc_channels: int = 64


class DecoderLoss(nn.Module):
    """The frozen LPIPS network and the loss functions; the discriminator is passed to each call (the training
    loop holds it, DDP-wrapped in its own phase and unwrapped in the decoder's).

    Args:
        config: :class:`DecoderLossConfig`.
        lpips: an :class:`evaluate.features.lpips.LPIPSDistance`; default built from the registry
            (``lpips_weights_dir``, explicit ``lpips_backbone`` / ``lpips_linear`` files). Unused when
            ``config.perceptual_weight`` is 0.
    """

    def __init__(self, config: DecoderLossConfig = DecoderLossConfig(), lpips=None,
                 lpips_backbone: str | os.PathLike | None = None, lpips_linear: str | os.PathLike | None = None,
                 lpips_weights_dir: str | os.PathLike | None = None):
        super().__init__()
        if lpips is None and config.perceptual_weight > 0:
            from evaluate.features.lpips import build_lpips

            lpips = build_lpips(config.lpips_net, lpips_backbone, lpips_linear, lpips_weights_dir)
        self.config = config
        self.lpips = None if lpips is None or config.perceptual_weight == 0 else lpips.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> DecoderLoss:
        """LPIPS always stays in eval mode."""
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()
        return self

    def make_discriminator(self) -> NLayerDiscriminator:
        """A fresh discriminator of the configured size (draws from torch's default generator)."""
        return NLayerDiscriminator(3, self.config.disc_channels, self.config.disc_layers)

    def adversarial(self, step: int) -> bool:
        """Whether step ``step`` (0-based) has the adversarial terms."""
        return self.config.disc_weight > 0 and step >= self.config.disc_start

    def reconstruction(self, target: Tensor, reconstruction: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``mean|x − x̂| + w_p · mean LPIPS``; images ``[B, 3, H, W]`` in [−1, 1]. Returns (loss, parts)."""
        l1 = (target - reconstruction).abs().mean()
        parts = {"l1": l1.detach()}
        loss = l1
        if self.lpips is not None:
            perceptual = self.lpips(reconstruction.float(), target.float(), normalize=False).mean()
            parts["lpips"] = perceptual.detach()
            loss = loss + self.config.perceptual_weight * perceptual
        return loss, parts

    def generator_loss(self, target: Tensor, reconstruction: Tensor, last_layer: Tensor, step: int,
                       discriminator: nn.Module) -> tuple[Tensor, dict[str, Tensor]]:
        """The decoder's loss at ``step`` (see the module docstring) and its parts (detached scalars:
        ``l1``, ``lpips``, ``rec`` and, when adversarial, ``g``, ``adaptive_weight``)."""
        rec, parts = self.reconstruction(target, reconstruction)
        parts["rec"] = rec.detach()
        if not self.adversarial(step):
            return rec, parts
        g_loss = -discriminator(reconstruction).mean()
        weight = adaptive_weight(rec, g_loss, last_layer, self.config.disc_weight)
        parts.update(g=g_loss.detach(), adaptive_weight=weight)
        return rec + weight * g_loss, parts

    @staticmethod
    def discriminator_loss(target: Tensor, reconstruction: Tensor, discriminator: nn.Module
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        """Hinge loss of ``discriminator`` on real ``target`` and detached fake ``reconstruction``."""
        logits_real = discriminator(target.detach())
        logits_fake = discriminator(reconstruction.detach())
        loss = hinge_d_loss(logits_real, logits_fake)
        return loss, {"d": loss.detach(), "logits_real": logits_real.detach().mean(),
                      "logits_fake": logits_fake.detach().mean()}
