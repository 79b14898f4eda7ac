"""The alignment module: maps MAE prior tokens into the UNet's cross-attention space (replacing text).

ASUKA's module is ``Linear(prior_dim → cross_attention_dim)`` + N pre-norm self-attention blocks + LayerNorm,
N = 4. The ablations of paper Table 3 are the same class with another config (see :data:`ALIGNMENT_VARIANTS`).
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Paper Table 3 rows → PriorAlignment keyword arguments.
ALIGNMENT_VARIANTS: dict[str, dict] = {
    "linear": {"kind": "self_attention", "num_layers": 0},
    "attn": {"kind": "self_attention", "num_layers": 1},
    "cross4": {"kind": "cross_attention", "num_layers": 4},
    "asuka": {"kind": "self_attention", "num_layers": 4},
}


def default_num_heads(cross_attention_dim: int) -> int:
    """64 channels per head (12 heads at SD 1.5's 768), at least one head."""
    return max(1, cross_attention_dim // 64)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + ff(norm(x))``. ``[B, L, D]`` → same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm block where queries ``[B, Q, D]`` attend to the prior ``[B, L, D]``, then a feed-forward."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = self.norm_context(context)
        queries = queries + self.attn(self.norm_query(queries), context, context, need_weights=False)[0]
        return queries + self.ff(self.norm2(queries))


class PriorAlignment(ModelMixin, ConfigMixin):
    """Prior tokens ``[B, L, prior_dim]`` → UNet condition ``[B, L', cross_attention_dim]``.

    Args:
        prior_dim: width of the MAE prior (512).
        cross_attention_dim: the UNet's ``cross_attention_dim`` (768 for SD 1.5).
        kind: ``"self_attention"`` (ASUKA; ``num_layers = 0`` is the linear-only ablation, output length L) or
            ``"cross_attention"`` (``num_queries`` learnable queries attend to the projected prior, output length
            ``num_queries``).
        num_layers: attention blocks (4 in ASUKA).
        num_heads: attention heads (12: 64 channels per head at 768 — the paper does not give it; see
            :func:`default_num_heads`).
        mlp_ratio: feed-forward hidden width ÷ width.
        num_queries: learnable queries of the cross-attention variant (256 = the prior length by default).
    """

    @register_to_config
    def __init__(
        self,
        prior_dim: int = 512,
        cross_attention_dim: int = 768,
        kind: str = "self_attention",
        num_layers: int = 4,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_queries: int = 256,
    ) -> None:
        super().__init__()
        if kind not in ("self_attention", "cross_attention"):
            raise ValueError(f"kind must be 'self_attention' or 'cross_attention', got {kind!r}")
        if kind == "cross_attention" and num_layers < 1:
            raise ValueError("the cross-attention variant needs at least one layer")
        self.proj_in = nn.Linear(prior_dim, cross_attention_dim)
        if kind == "self_attention":
            self.blocks = nn.ModuleList(
                SelfAttentionBlock(cross_attention_dim, num_heads, mlp_ratio) for _ in range(num_layers)
            )
        else:
            self.queries = nn.Parameter(torch.randn(1, num_queries, cross_attention_dim) * 0.02)
            self.blocks = nn.ModuleList(
                CrossAttentionBlock(cross_attention_dim, num_heads, mlp_ratio) for _ in range(num_layers)
            )
        self.norm_out = nn.LayerNorm(cross_attention_dim)

    @classmethod
    def from_variant(cls, name: str, **config) -> "PriorAlignment":
        """Build a paper Table 3 variant by name (``linear``, ``attn``, ``cross4``, ``asuka``)."""
        if name not in ALIGNMENT_VARIANTS:
            raise ValueError(f"unknown alignment variant {name!r}; choose from {', '.join(ALIGNMENT_VARIANTS)}")
        return cls(**{**ALIGNMENT_VARIANTS[name], **config})

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        """``prior [B, L, prior_dim]`` → ``[B, L or num_queries, cross_attention_dim]``."""
        x = self.proj_in(prior)
        if self.config.kind == "self_attention":
            for block in self.blocks:
                x = block(x)
            return self.norm_out(x)
        queries = self.queries.expand(x.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, x)
        return self.norm_out(queries)
