"""Attention for the U-Net: self-attention, cross-attention to conditioning tokens, feed-forward.

All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
kernels on GPU when no mask is needed, fused CPU kernels otherwise). Norms run in float32; the fused
kernels keep the softmax statistics in float32 under autocast.

Cross-attention follows Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models"
(2022): queries from the feature map, keys and values from the tokens ``[B, L, D]``. Key padding is given as
a bool ``attn_mask [B, 1, 1, L]`` (True = attend). Rows with *no* real token would give a softmax over an
empty set (NaN); the caller passes a mask with every key allowed for those rows plus ``keep [B, 1, 1]`` = 0,
which zeroes their cross-attention output: attending to nothing contributes nothing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sonodiff.nn.blocks import GroupNorm32, zero_module
from sonodiff.nn.embeddings import apply_rope

__all__ = ["AttentionBlock", "CrossContext", "LayerNorm32"]

# (tokens [B, L, D], attn_mask [B, 1, 1, L] bool or None, keep [B, 1, 1] float or None)
CrossContext = tuple[Tensor, Tensor | None, Tensor | None]


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class AttentionBlock(nn.Module):
    """Pre-norm transformer layer applied to a feature map ``[B, C, *S]`` viewed as ``N = prod(S)`` tokens.

    ``x + SelfAttn(GroupNorm(x))`` with optional rotary positions, then ``+ CrossAttn(LayerNorm(.), tokens)``
    when ``token_dim > 0``, then ``+ FF(LayerNorm(.))`` when ``ff_mult > 0``. Every output projection is
    zero-initialised, so the block is the identity at initialisation.

    ``forward(x [B, C, *S], rope (cos, sin) [N, head_dim/2] | None, ctx CrossContext | None) -> [B, C, *S]``.
    """

    def __init__(
        self, channels: int, head_dim: int, groups: int, token_dim: int = 0, ff_mult: int = 0
    ) -> None:
        super().__init__()
        if channels % head_dim != 0:
            raise ValueError(f"attention channels {channels} must be divisible by head_dim {head_dim}")
        self.heads, self.head_dim = channels // head_dim, head_dim
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))
        self.token_dim = token_dim
        if token_dim > 0:
            self.norm_cross = LayerNorm32(channels)
            self.q_cross = nn.Linear(channels, channels)
            self.kv_cross = nn.Linear(token_dim, 2 * channels)
            self.proj_cross = zero_module(nn.Linear(channels, channels))
        self.ff = None
        if ff_mult > 0:
            self.norm_ff = LayerNorm32(channels)
            self.ff = nn.Sequential(
                nn.Linear(channels, ff_mult * channels),
                nn.GELU(approximate="tanh"),
                zero_module(nn.Linear(ff_mult * channels, channels)),
            )

    def _split(self, t: Tensor) -> Tensor:
        """``[B, N, heads * d] -> [B, heads, N, d]``."""
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, t: Tensor) -> Tensor:
        """``[B, heads, N, d] -> [B, N, heads * d]``."""
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None, ctx: CrossContext | None = None
    ) -> Tensor:
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, N, C]
        n = h.shape[1]
        qkv = self.qkv(h).view(b, n, 3, self.heads, self.head_dim)
        qk = qkv[:, :, :2]  # queries and keys, rotated together: half the kernel launches of one at a time
        if rope is not None:
            cos, sin = rope
            qk = apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :])
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        t = x.flatten(2).transpose(1, 2) + self.proj(self._merge(F.scaled_dot_product_attention(q, k, v)))
        if self.token_dim > 0:
            if ctx is None:
                raise ValueError("this attention block has cross-attention but no token context was given")
            tokens, attn_mask, keep = ctx
            kc, vc = self.kv_cross(tokens.to(self.kv_cross.weight.dtype)).chunk(2, dim=-1)
            qc = self._split(self.q_cross(self.norm_cross(t)))
            a = self._merge(
                F.scaled_dot_product_attention(qc, self._split(kc), self._split(vc), attn_mask=attn_mask)
            )
            a = self.proj_cross(a)
            t = t + (a if keep is None else a * keep.to(a.dtype))
        if self.ff is not None:
            t = t + self.ff(self.norm_ff(t))
        return t.transpose(1, 2).reshape(b, c, *spatial)
