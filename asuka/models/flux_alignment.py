"""The alignment module of ASUKA-FLUX: MAE prior tokens → FLUX's T5 stream (``txt``) or CLIP pooled vector (``vec``).

As released (``asuka_alignment_t5.pt``, ``asuka_alignment_clip.pt``) each module is an ``nn.Sequential``:

    0: Linear(prior_dim → dim)
    1..N: FLUX single-stream blocks *without modulation in the forward* (N = 4):
          x + linear2(concat(attn(qk_rmsnorm(qkv)), gelu_tanh(mlp)))  with  qkv, mlp = split(linear1(LN(x)))
          LN: LayerNorm without affine, eps 1e-6; heads of 64 channels; no positional encoding
    N+1: LayerNorm(dim)

so the state-dict keys are ``0.weight``, ``1.linear1.weight``, …, ``1.norm.query_norm.scale``, …, ``5.weight``.
Every block also holds ``modulation.lin`` (``dim → 3·dim``), as FLUX's block does; the released forward never uses
it. It is kept so the released files load strictly, and it is never used here either.

:class:`NoneFeatures` holds the released "none" condition (``txt_256.pt``, ``vec.pt``) that the condition weight
interpolates from.

Parameters per block: ``linear1`` 7d² + 7d, ``linear2`` 5d² + d, ``modulation.lin`` 3d² + 3d, QK norms 2·64 →
15d² + 11d + 128; at d = 4096 (the T5 module) 4 blocks + input projection + LayerNorm = 1,008,923,136 parameters (4.04 GB in float32)
(checked in ``tests/asuka/test_flux_alignment.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

HEAD_DIM = 64


class RMSNorm(nn.Module):
    """FLUX's RMSNorm over the last axis: computed in float32, cast back, then scaled (``scale [dim]``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        return normed.to(x.dtype) * self.scale


class QKNorm(nn.Module):
    """RMSNorm of queries and keys per head (``query_norm``, ``key_norm``), results in the values' dtype."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)


class Modulation(nn.Module):
    """Holds FLUX's single-stream ``modulation.lin`` (``dim → 3·dim``) so released files load; never called."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 3 * dim)


class SingleStreamBlock(nn.Module):
    """FLUX single-stream block without modulation: ``[B, L, dim]`` → ``[B, L, dim]`` (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_hidden = int(dim * mlp_ratio)
        self.linear1 = nn.Linear(dim, 3 * dim + self.mlp_hidden)
        self.linear2 = nn.Linear(dim + self.mlp_hidden, dim)
        self.norm = QKNorm(dim // num_heads)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = Modulation(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv, mlp = torch.split(self.linear1(self.pre_norm(x)), [3 * self.dim, self.mlp_hidden], dim=-1)
        q, k, v = qkv.reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        attention = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, self.dim)
        return x + self.linear2(torch.cat([attention, F.gelu(mlp, approximate="tanh")], dim=-1))


class FluxPriorAlignment(ModelMixin, ConfigMixin):
    """Prior ``[B, L, prior_dim]`` → ``[B, L, dim]`` (the released ``nn.Sequential`` layout and key names).

    Args:
        prior_dim: MAE prior width (512).
        dim: output width: 4096 for the T5 stream, 768 for the CLIP pooled vector (pooled by the pipeline as the
            mean over tokens).
        num_layers: single-stream blocks (4).
        num_heads: attention heads (default ``dim // 64``, as released; at least one).
        mlp_ratio: MLP hidden width ÷ width (4, FLUX's).
    """

    @register_to_config
    def __init__(
        self, prior_dim: int = 512, dim: int = 4096, num_layers: int = 4, num_heads: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        heads = num_heads if num_heads is not None else max(1, dim // HEAD_DIM)
        self.add_module("0", nn.Linear(prior_dim, dim))
        for index in range(1, num_layers + 1):
            self.add_module(str(index), SingleStreamBlock(dim, heads, mlp_ratio))
        self.add_module(str(num_layers + 1), nn.LayerNorm(dim))

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        """``prior [B, L, prior_dim]`` → ``[B, L, dim]``."""
        x = prior
        for module in self.children():
            x = module(x)
        return x


class NoneFeatures(ModelMixin, ConfigMixin):
    """The released "none" condition: ``txt [1, tokens, txt_dim]`` (``txt_256.pt``) and ``vec [1, vec_dim]``
    (``vec.pt``), the points the condition weight interpolates from. Stored as frozen parameters so that
    ``save_pretrained`` keeps them with the pipeline."""

    @register_to_config
    def __init__(self, tokens: int = 256, txt_dim: int = 4096, vec_dim: int = 768) -> None:
        super().__init__()
        self.txt = nn.Parameter(torch.zeros(1, tokens, txt_dim), requires_grad=False)
        self.vec = nn.Parameter(torch.zeros(1, vec_dim), requires_grad=False)

    @classmethod
    def from_tensors(cls, txt: torch.Tensor, vec: torch.Tensor) -> "NoneFeatures":
        """From ``txt [1, tokens, txt_dim]`` and ``vec [1, vec_dim]`` (a leading batch axis is added if absent),
        stored in float32."""
        txt = txt[None] if txt.ndim == 2 else txt
        vec = vec[None] if vec.ndim == 1 else vec
        if txt.ndim != 3 or vec.ndim != 2 or txt.shape[0] != 1 or vec.shape[0] != 1:
            raise ValueError(f"none features must be txt [1, L, D] and vec [1, D], got {tuple(txt.shape)} and "
                             f"{tuple(vec.shape)}")
        features = cls(tokens=txt.shape[1], txt_dim=txt.shape[2], vec_dim=vec.shape[1])
        with torch.no_grad():
            features.txt.copy_(txt)
            features.vec.copy_(vec)
        return features
