"""Embeddings: the noise-level embedding and rotary positions.

- :class:`NoiseEmbedding`: ``c_noise [B]`` -> ``[B, E]``. Sinusoidal features at log-spaced angular frequencies
  from ``1e-3`` to ``1e2`` rad per unit (Vaswani et al. 2017 / Ho et al. 2020 positional features, widened
  as in the Fourier features of Tancik et al. 2020 and Song et al. 2021), then a two-layer SiLU MLP. The
  band covers both conventions the core produces: EDM's ``c_noise = log(sigma) / 4`` (about -2..2, resolved
  by the high frequencies) and DDPM timesteps 0..999 (resolved by the low ones) without saturating.
  A pooled conditioning vector ``[B, D]`` can be projected and added before the MLP's non-linearity.
- Rotary position embedding (RoPE; Su et al., "RoFormer", 2021) for self-attention queries and keys,
  axial for 2-D inputs (half of each head's channels rotate with the row, half with the column index).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NoiseEmbedding", "apply_rope", "fourier_features", "rope_tables"]


def fourier_features(c_noise: Tensor, num_freqs: int, low: float = 1e-3, high: float = 1e2) -> Tensor:
    """``c_noise [B]`` (any real value) -> ``[B, 2 * num_freqs]`` = ``[cos(w c), sin(w c)]`` in float32,
    ``w`` log-spaced in ``[low, high]`` rad per unit of ``c_noise``."""
    if c_noise.ndim != 1:
        raise ValueError(f"c_noise must be a [B] tensor, got shape {tuple(c_noise.shape)}")
    w = torch.exp(
        torch.linspace(math.log(low), math.log(high), num_freqs, device=c_noise.device, dtype=torch.float32)
    )
    arg = c_noise.float()[:, None] * w[None, :]
    return torch.cat([arg.cos(), arg.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """``forward(c_noise [B], pooled [B, D] | None) -> emb [B, E]``.

    ``emb = W2 silu(W1 fourier(c_noise) + Wp pooled)``; ``pooled`` is only accepted when ``pooled_dim > 0``.
    """

    def __init__(self, emb_dim: int, num_freqs: int = 128, pooled_dim: int = 0) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.lin1 = nn.Linear(2 * num_freqs, emb_dim)
        self.pooled = nn.Linear(pooled_dim, emb_dim, bias=False) if pooled_dim > 0 else None
        self.lin2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, c_noise: Tensor, pooled: Tensor | None = None) -> Tensor:
        feats = fourier_features(c_noise, self.num_freqs).to(self.lin1.weight.dtype)
        h = self.lin1(feats)
        if pooled is not None:
            if self.pooled is None:
                raise ValueError("a pooled vector was given but this embedding has pooled_dim=0")
            h = h + self.pooled(pooled.to(h.dtype))
        return self.lin2(torch.nn.functional.silu(h))


def rope_tables(
    shape: tuple[int, ...], head_dim: int, device, base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """Rotary tables for a flattened grid of spatial ``shape`` (``(T,)`` or ``(H, W)``).

    Returns ``cos, sin`` each ``[N, head_dim // 2]`` (``N = prod(shape)``, float32). Each spatial axis gets
    ``head_dim // (2 * len(shape))`` frequencies ``base ** (-2k / d_axis)``.
    """
    n_axes = len(shape)
    if head_dim % (2 * n_axes) != 0:
        raise ValueError(
            f"rotary positions need head_dim divisible by {2 * n_axes} for {n_axes}-D inputs, got {head_dim}"
        )
    d_axis = head_dim // n_axes
    inv = base ** (-torch.arange(0, d_axis, 2, device=device, dtype=torch.float32) / d_axis)  # [d_axis/2]
    grids = torch.meshgrid(
        *[torch.arange(s, device=device, dtype=torch.float32) for s in shape], indexing="ij"
    )
    angles = torch.cat([g.reshape(-1, 1) * inv[None, :] for g in grids], dim=1)  # [N, head_dim/2]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x[..., :d/2], x[..., d/2:])`` of ``x [..., N, d]`` by the angles of the tables.

    ``cos``/``sin`` are ``[N, d/2]`` (for ``x [B, heads, N, d]``) or any shape that broadcasts against
    ``x[..., :d/2]`` (the attention block rotates queries and keys together as ``[B, N, 2, heads, d]`` with
    tables ``[N, 1, 1, d/2]``). Computed in float32 and cast back to ``x.dtype``.
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([torch.addcmul(x1 * cos, x2, sin, value=-1.0), torch.addcmul(x1 * sin, x2, cos)], dim=-1)
    return out.to(x.dtype)
