"""The MAE prior: the MAE-FAR masked autoencoder (ViT, no cls token) turned into a per-token feature extractor.

Shapes for the released ViT-B configuration: image 256×256, patch 16 → 256 tokens; encoder 768-d × 12 blocks,
decoder 512-d × 8 blocks; the prior is the output of the first ``prior_layers`` (default 6) decoder blocks,
``[B, 256, 512]``. Parameter names follow MAE-FAR (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``decoder_blocks``,
``decoder_patch_embed.proj``, ``alpha``…), so its checkpoints load without renaming (see :mod:`asuka.convert`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions ``[grid * grid, dim]`` (row-major tokens; half the channels encode x,
    half y, each half as ``[sin, cos]`` over ``dim / 4`` geometric frequencies), as in MAE."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    frequencies = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def encode(positions: np.ndarray) -> np.ndarray:
        angles = np.outer(positions.reshape(-1), frequencies)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return torch.from_numpy(np.concatenate([encode(xs), encode(ys)], axis=1)).float()


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch × patch`` patches → tokens: ``[B, C, H, W]`` → ``[B, (H/p)(W/p), dim]``."""

    def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an optional additive key bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v``, each ``[B, heads, L, D / heads]``."""
        batch, length, dim = x.shape
        return self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, heads, L, D / heads]`` → output projection ``[B, L, D]``."""
        batch, _, length, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(batch, length, -1))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, L, D]``; ``key_bias [B, 1, 1, L]`` added to the attention logits (0 or −inf)."""
        q, k, v = self._heads(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias))

    def forward_with_scores(self, x: torch.Tensor, score_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unbiased attention over ``x [B, L, D]`` as :meth:`forward`, plus MAE-FAR's ``mask_decoder`` scores: the
        softmax of the same logits with ``score_bias [B, 1, 1, L]`` (0 or −inf) added, averaged over heads,
        ``[B, L (queries), L (keys)]``, rows summing to 1."""
        q, k, v = self._heads(x)
        logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        scores = (logits + score_bias).softmax(dim=-1).mean(dim=1)
        return self._merge(logits.softmax(dim=-1) @ v), scores


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (timm layout: ``norm1, attn, norm2, mlp``), LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.mlp(self.norm2(x))

    def forward_with_scores(self, x: torch.Tensor, score_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` without key bias, and the attention scores of :meth:`Attention.forward_with_scores`."""
        attended, scores = self.attn.forward_with_scores(self.norm1(x), score_bias)
        x = x + attended
        return x + self.mlp(self.norm2(x)), scores


class MAEPrior(ModelMixin, ConfigMixin):
    """MAE-FAR masked autoencoder used as ASUKA's prior.

    Inputs everywhere: ``image`` float ``[B, 3, H, W]`` in [0, 1] and ``mask`` float/bool ``[B, 1, H, W]`` with
    1 = hole (any size; both are resized to ``image_size`` with area interpolation, a resized pixel being a hole
    if any source pixel was).

    Args:
        image_size, patch_size: the ViT grid (256 / 16 → 16 × 16 tokens).
        embed_dim, depth, num_heads: encoder width, blocks, heads (768, 12, 12).
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder (512, 8, 16).
        mlp_ratio: MLP hidden width ÷ width (4).
        prior_layers: decoder blocks run to produce the prior (the paper uses the first 6 of 8).
        partial_token_embedding: the fine-tuned MAE-FAR extras — a 4-channel patch embedding of
            (masked image ⊕ mask) into the decoder width and a scalar ``alpha`` (clamped to [0, 1]) that blends it
            into partially masked tokens. False for the plain pre-trained MAE (paper Table 2, "p.t. MAE").
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        prior_layers: int = 6,
        partial_token_embedding: bool = True,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if not 1 <= prior_layers <= decoder_depth:
            raise ValueError(f"prior_layers must lie in [1, {decoder_depth}], got {prior_layers}")
        self.grid = image_size // patch_size
        tokens = self.grid * self.grid
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(embed_dim, self.grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed_2d(decoder_embed_dim, self.grid)[None], requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * 3)
        if partial_token_embedding:
            self.decoder_patch_embed = PatchEmbed(patch_size, 4, decoder_embed_dim)
            self.alpha = nn.Parameter(torch.tensor(1.0))
        assert self.pos_embed.shape[1] == tokens
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialisation: xavier-uniform linears and patch projections, N(0, 0.02) mask token."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, PatchEmbed):
                nn.init.xavier_uniform_(module.proj.weight.view(module.proj.weight.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------ inputs

    def prepare_inputs(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize to ``image_size`` (area), normalise with ImageNet mean/std and zero the holes (in float32, then
        cast to the module's dtype, so a half-precision MAE takes any input dtype).

        Returns:
            ``normalized [B, 3, S, S]`` (holes = 0) and ``hole [B, 1, S, S]`` in {0, 1}, in the module's dtype.
        """
        size = self.config.image_size
        image = F.interpolate(image.float(), size=(size, size), mode="area")
        hole = (F.interpolate(mask.float(), size=(size, size), mode="area") > 0).float()
        mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((image - mean) / std * (1 - hole)).to(self.dtype), hole.to(self.dtype)

    def token_masks(self, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token hole fractions of a ``[B, 1, S, S]`` mask → ``(masked, partial)`` booleans ``[B, L]``:
        masked = any hole pixel in the patch, partial = masked but not entirely hole."""
        fraction = F.interpolate(hole, size=(self.grid, self.grid), mode="area").flatten(1)
        return fraction > 0, (fraction > 0) & (fraction < 1)

    # ------------------------------------------------------------------ stages

    def encode(self, normalized: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Encoder over all tokens with attention to masked keys disabled: ``[B, 3, S, S]`` → ``[B, L, embed_dim]``.

        A sample whose tokens are all masked (a full-image hole) attends to every token instead, which avoids
        NaNs; its encoder output is discarded by :meth:`decoder_input` anyway.
        """
        x = self.patch_embed(normalized) + self.pos_embed
        blocked = masked & ~masked.all(dim=1, keepdim=True)
        key_bias = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device).masked_fill(blocked, float("-inf"))
        key_bias = key_bias[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_bias)
        return self.norm(x)

    def decoder_input(
        self, latent: torch.Tensor, normalized: torch.Tensor, hole: torch.Tensor
    ) -> torch.Tensor:
        """Decoder tokens ``[B, L, decoder_embed_dim]`` (positions added): visible tokens from the encoder,
        masked tokens → ``mask_token``, partially masked tokens → ``α·mask_token + (1 − α)·embed(image ⊕ mask)``
        with ``α`` clamped to [0, 1] (only with ``partial_token_embedding``)."""
        masked, partial = self.token_masks(hole)
        x = self.decoder_embed(latent)
        x = torch.where(masked[..., None], self.mask_token.to(x.dtype), x)
        if self.config.partial_token_embedding:
            alpha = self.alpha.clamp(0.0, 1.0)
            embedded = self.decoder_patch_embed(torch.cat([normalized, hole], dim=1))
            x = torch.where(partial[..., None], alpha * x + (1 - alpha) * embedded, x)
        return x + self.decoder_pos_embed

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prior_layers: int | None = None) -> torch.Tensor:
        """The prior: ``image [B, 3, H, W]`` in [0, 1], ``mask [B, 1, H, W]`` (1 = hole) → ``[B, L, decoder_embed_dim]``
        after the first ``prior_layers`` decoder blocks (default from the config; no final norm)."""
        layers = self.config.prior_layers if prior_layers is None else prior_layers
        normalized, hole = self.prepare_inputs(image, mask)
        masked, _ = self.token_masks(hole)
        x = self.decoder_input(self.encode(normalized, masked), normalized, hole)
        for block in self.decoder_blocks[:layers]:
            x = block(x)
        return x

    def features_and_scores(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAE-FAR's ``forward_return_feature`` with ``mask_decoder`` (what its ACR generator is conditioned on).

        Same inputs as :meth:`forward`; every decoder block runs (unmasked attention) and ``decoder_norm`` follows.

        Returns:
            ``features [B, decoder_embed_dim, grid, grid]`` (token ``i`` at row ``i // grid``, column ``i % grid``)
            and ``scores [B, L, L]``: each decoder block's attention probabilities recomputed with the keys of
            tokens lying entirely in the hole left out, averaged over heads and blocks (rows sum to 1). A sample
            whose every token lies in the hole keeps all keys (upstream would give NaN).
        """
        normalized, hole = self.prepare_inputs(image, mask)
        masked, partial = self.token_masks(hole)
        x = self.decoder_input(self.encode(normalized, masked), normalized, hole)
        inside = masked & ~partial
        inside = inside & ~inside.all(dim=1, keepdim=True)
        score_bias = torch.zeros(inside.shape, dtype=x.dtype, device=x.device).masked_fill(inside, float("-inf"))
        score_bias = score_bias[:, None, None, :]
        total = torch.zeros(x.shape[0], x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        for block in self.decoder_blocks:
            x, scores = block.forward_with_scores(x, score_bias)
            total = total + scores
        features = self.decoder_norm(x).transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid)
        return features, total / len(self.decoder_blocks)

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MAE's own output: all decoder blocks, norm and pixel head, un-normalised → ``[B, 3, S, S]`` in [0, 1]
        (not clamped; known pixels are not pasted back). For fine-tuning losses and visualisation."""
        normalized, hole = self.prepare_inputs(image, mask)
        masked, _ = self.token_masks(hole)
        x = self.decoder_input(self.encode(normalized, masked), normalized, hole)
        for block in self.decoder_blocks:
            x = block(x)
        patches = self.decoder_pred(self.decoder_norm(x))
        pixels = self.unpatchify(patches)
        mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return pixels * std + mean

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` → ``[B, L, p*p*3]`` (patch pixels ordered row, column, channel, as MAE)."""
        p, g = self.config.patch_size, self.grid
        x = images.reshape(images.shape[0], 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(images.shape[0], g * g, p * p * 3)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``[B, L, p*p*3]`` → ``[B, 3, S, S]``."""
        p, g = self.config.patch_size, self.grid
        x = patches.reshape(patches.shape[0], g, g, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(patches.shape[0], 3, g * p, g * p)
