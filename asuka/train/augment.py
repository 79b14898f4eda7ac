"""The decoder stage's two augmentations (paper Sec. 3.3, Table 4): colour jitter and latent augmentation.

Both draw every random number of sample ``i`` from the ``i``-th of a list of ``torch.Generator`` s passed by the
caller (one per sample, as :func:`asuka.train.data.sample_generators` makes them), never from torch's global stream:
a sample's augmentation depends only on its own seed, so a run is reproducible, resumes exactly, and gives the same
samples whatever the batch size or the number of processes.

- :class:`ColorJitter` — torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` rule (a random order
  of the four ``adjust_*`` operations, each factor uniform in its range) applied with a fresh draw per sample.
  Factors are drawn exactly as ``torchvision.transforms.ColorJitter.get_params`` draws them (``randperm(4)``, then
  one ``uniform_`` per enabled operation), only from the given generator: with a generator seeded ``s`` the result
  equals torchvision's transform run after ``torch.manual_seed(s)``.
- :func:`latent_augment` — with probability ``p`` per sample, the latent is replaced by the frozen SD-inpainting
  UNet's one-step estimate of the clean latent (eq. 1 of the paper)
  ``x̂0 = (z_t − sqrt(1 − ᾱ_t)·ε_θ(z_t, t, c)) / sqrt(ᾱ_t)``, ``z_t = sqrt(ᾱ_t)·z0 + sqrt(1 − ᾱ_t)·ε``,
  with the UNet conditioned on the unmasked latent (``z0`` itself) and an all-zero mask. The decoder then learns to
  decode latents that carry the UNet's own artefacts (colour shifts, texture changes) while keeping the known region
  faithful. The paper does not give the timestep range: ``timestep_range`` defaults to the whole training schedule
  ``[0, T − 1]`` (with the clean latent in its input the UNet's estimate stays close to ``z0`` at every ``t``).
  The cross-attention condition ``c`` is not given either: the default is one all-zero token, whose attention output
  is the same for any sequence length (no text, no prior — the paper uses no text).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from misato.errors import MisatoError


def _check_generators(generators: Sequence[torch.Generator], batch: int) -> None:
    if len(generators) != batch:
        raise ValueError(f"need one generator per sample: {len(generators)} generators for a batch of {batch}")


def _factor_range(value: float, name: str, center: float, upper: float) -> tuple[float, float] | None:
    """torchvision's range for a jitter strength: ``[max(0, center − v), center + v]`` for brightness/contrast/
    saturation, ``[−v, v]`` for hue; ``None`` when the range is the single point ``center`` (operation off)."""
    value = float(value)
    if not 0.0 <= value <= upper:
        raise MisatoError(f"--color-jitter: {name} must be in [0, {upper:g}], got {value:g}")
    if value == 0.0:
        return None
    low = center - value
    return (max(low, 0.0) if center == 1.0 else low, center + value)


@dataclass(frozen=True)
class ColorJitterParams:
    """One sample's draw: the order of the four operations (0 brightness, 1 contrast, 2 saturation, 3 hue) and
    each factor (``None`` = that operation is off)."""

    order: tuple[int, ...]
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None


class ColorJitter:
    """Per-sample colour jitter drawn from a caller's generator (the paper's strengths by default).

    Args:
        brightness, contrast, saturation: strengths ``v`` (factor uniform in ``[max(0, 1 − v), 1 + v]``).
        hue: strength ``v ≤ 0.5`` (hue shift uniform in ``[−v, v]``).
    """

    def __init__(self, brightness: float = 0.15, contrast: float = 0.2, saturation: float = 0.1,
                 hue: float = 0.03) -> None:
        self.ranges = (
            _factor_range(brightness, "brightness", 1.0, float("inf")),
            _factor_range(contrast, "contrast", 1.0, float("inf")),
            _factor_range(saturation, "saturation", 1.0, float("inf")),
            _factor_range(hue, "hue", 0.0, 0.5),
        )

    def sample(self, generator: torch.Generator) -> ColorJitterParams:
        """Draw one sample's parameters from ``generator`` in torchvision's order."""
        order = tuple(int(i) for i in torch.randperm(4, generator=generator))
        factors = [None if bounds is None else float(torch.empty(1).uniform_(*bounds, generator=generator))
                   for bounds in self.ranges]
        return ColorJitterParams(order, *factors)

    @staticmethod
    def apply(image: Tensor, params: ColorJitterParams) -> Tensor:
        """``image [..., 3, H, W]`` float in [0, 1] → jittered, same shape, clamped to [0, 1] by torchvision."""
        from torchvision.transforms import functional as TF

        operations = (
            (TF.adjust_brightness, params.brightness), (TF.adjust_contrast, params.contrast),
            (TF.adjust_saturation, params.saturation), (TF.adjust_hue, params.hue),
        )
        for index in params.order:
            adjust, factor = operations[index]
            if factor is not None:
                image = adjust(image, factor)
        return image

    def __call__(self, images: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """``images [B, 3, H, W]`` float in [0, 1] → jittered copy; sample ``i`` draws from ``generators[i]``."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float [B, 3, H, W], got {tuple(images.shape)} {images.dtype}")
        _check_generators(generators, images.shape[0])
        return torch.stack([self.apply(image, self.sample(g)) for image, g in zip(images, generators)])


def predicted_clean_latent(
    noisy: Tensor, model_output: Tensor, alphas_cumprod_t: Tensor, prediction_type: str = "epsilon"
) -> Tensor:
    """Eq. 1: the clean latent implied by a UNet output at ``z_t``.

    Args:
        noisy: ``z_t`` ``[B, C, h, w]``.
        model_output: the UNet's output, same shape: ε (``"epsilon"``) or v (``"v_prediction"``).
        alphas_cumprod_t: ``ᾱ_t`` per sample ``[B]`` in (0, 1].
    Returns:
        ``x̂0 = (z_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t)`` (or ``sqrt(ᾱ_t)·z_t − sqrt(1 − ᾱ_t)·v``), float32.
    """
    alpha = alphas_cumprod_t.float().reshape(-1, 1, 1, 1)
    noisy, model_output = noisy.float(), model_output.float()
    if prediction_type == "epsilon":
        return (noisy - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
    if prediction_type == "v_prediction":
        return alpha.sqrt() * noisy - (1 - alpha).sqrt() * model_output
    raise MisatoError(f"latent augmentation needs an epsilon or v_prediction scheduler, got {prediction_type!r}")


@dataclass
class LatentAugmentation:
    """What :func:`latent_augment` did: ``latents`` (the batch, augmented rows replaced), ``applied`` (bool ``[B]``)
    and ``timesteps`` (long ``[B]``; drawn for every row, used only where ``applied``)."""

    latents: Tensor
    applied: Tensor
    timesteps: Tensor


def check_timestep_range(timestep_range: tuple[int, int], num_train_timesteps: int) -> tuple[int, int]:
    """``(lo, hi)`` inclusive with ``0 ≤ lo ≤ hi < T``, else a MisatoError naming ``--latent-timesteps``."""
    low, high = (int(v) for v in timestep_range)
    if not 0 <= low <= high < num_train_timesteps:
        raise MisatoError(f"--latent-timesteps {low} {high}: need 0 <= lo <= hi < {num_train_timesteps}")
    return low, high


@torch.no_grad()
def latent_augment(
    latents: Tensor,
    unet,
    scheduler,
    generators: Sequence[torch.Generator],
    probability: float = 0.5,
    timestep_range: tuple[int, int] | None = None,
    encoder_hidden_states: Tensor | None = None,
) -> LatentAugmentation:
    """Replace each latent, with probability ``probability``, by the frozen inpainting UNet's one-step estimate.

    Args:
        latents: scaled latents ``z0 = scaling_factor · E(x)`` ``[B, 4, h, w]`` (the UNet's input scale).
        unet: a 9-channel SD-inpainting ``UNet2DConditionModel`` (frozen; run under ``no_grad``). Its input is
            ``[z_t, mask = 0, masked-image latent = z0]``.
        scheduler: supplies ``alphas_cumprod``, ``config.num_train_timesteps`` and ``config.prediction_type``.
        generators: one per sample (CPU); sample ``i`` draws from ``generators[i]``, in this order, its coin flip
            (``rand() < probability``), its timestep and its noise ``[4, h, w]`` — all three whatever the flip.
        probability: in [0, 1].
        timestep_range: inclusive ``(lo, hi)``; default the whole schedule ``(0, T − 1)``.
        encoder_hidden_states: the cross-attention condition ``[B, L, D]``; default one all-zero token.
    Returns:
        :class:`LatentAugmentation` with latents in the input's dtype.
    """
    if not 0.0 <= probability <= 1.0:
        raise MisatoError(f"--latent-aug-p must be in [0, 1], got {probability:g}")
    total = int(scheduler.config.num_train_timesteps)
    low, high = check_timestep_range(timestep_range or (0, total - 1), total)
    _check_generators(generators, latents.shape[0])
    flips, steps, noises = [], [], []
    for generator in generators:
        flips.append(torch.rand((), generator=generator) < probability)
        steps.append(torch.randint(low, high + 1, (), generator=generator))
        noises.append(torch.randn(latents.shape[1:], generator=generator))
    applied = torch.stack(flips).to(latents.device)
    timesteps, noise = torch.stack(steps).to(latents.device), torch.stack(noises).to(latents.device)
    out = latents.clone()
    if not bool(applied.any()):
        return LatentAugmentation(out, applied, timesteps)
    rows = applied.nonzero().flatten()
    clean, t, eps = latents[rows].float(), timesteps[rows], noise[rows]
    alpha = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float32)[t]
    noisy = alpha.sqrt().reshape(-1, 1, 1, 1) * clean + (1 - alpha).sqrt().reshape(-1, 1, 1, 1) * eps
    if encoder_hidden_states is None:
        condition = torch.zeros(len(rows), 1, unet.config.cross_attention_dim, device=latents.device)
    else:
        condition = encoder_hidden_states[rows]
    dtype = unet.dtype
    zero_mask = torch.zeros(len(rows), 1, *clean.shape[-2:], device=latents.device)
    unet_input = torch.cat([noisy, zero_mask, clean], dim=1).to(dtype)
    output = unet(unet_input, t, encoder_hidden_states=condition.to(dtype)).sample
    estimate = predicted_clean_latent(noisy, output, alpha, scheduler.config.prediction_type)
    out[rows] = estimate.to(latents.dtype)
    return LatentAugmentation(out, applied, timesteps)
