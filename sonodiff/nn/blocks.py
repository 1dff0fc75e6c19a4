"""Convolutional building blocks of the U-Net, generic over 1-D (``[B, C, T]``) and 2-D (``[B, C, H, W]``).

- :class:`GroupNorm32`: GroupNorm computed in float32 whatever the compute dtype (mixed-precision safety).
- :class:`ResBlock`: GroupNorm -> SiLU -> conv -> GroupNorm -> scale-and-shift by the noise embedding ->
  SiLU -> dropout -> zero-initialised conv, plus a (1x1-conv) skip. The scale-and-shift ("adaptive group
  norm") modulation is that of Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis" (2021),
  the zero-initialised last layer that of Ho et al. (2020) / ADM, so every residual branch starts as the
  identity.
- :class:`Downsample` / :class:`Upsample`: learned (strided conv; nearest + conv) or parameter-free
  (average pooling; nearest) resampling by an integer factor along every spatial axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Downsample", "GroupNorm32", "ResBlock", "Upsample", "conv_nd", "zero_module"]


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    raise ValueError(f"dims must be 1 or 2, got {dims}")


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (zero-initialised residual branches)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics and affine transform are computed in float32.

    Under ``torch.autocast`` the input may be bfloat16/float16; it is upcast, normalised and cast back to
    the input dtype, so the variance never underflows or overflows in half precision.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


class ResBlock(nn.Module):
    """Residual block with noise-embedding scale-and-shift modulation.

    ``forward(x [B, C_in, *S], emb [B, E]) -> [B, C_out, *S]``, where ``emb`` is the *already activated*
    (SiLU) noise embedding shared by every block. The branch is
    ``conv2(dropout(silu(norm2(conv1(silu(norm1(x)))) * (1 + scale) + shift)))`` with ``conv2`` zero-initialised,
    so at initialisation the block returns ``skip(x)``.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        groups: int,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.dims = dims
        self.norm1 = GroupNorm32(groups, in_channels)
        self.conv1 = conv_nd(dims, in_channels, out_channels, kernel_size, padding=pad)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = GroupNorm32(groups, out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_module(conv_nd(dims, out_channels, out_channels, kernel_size, padding=pad))
        self.skip = (
            nn.Identity() if in_channels == out_channels else conv_nd(dims, in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb).unsqueeze(-1).chunk(2, dim=1)  # [B, C, 1] each
        if self.dims == 2:
            scale, shift = scale.unsqueeze(-1), shift.unsqueeze(-1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Reduce every spatial axis by ``factor``: ``[B, C, *S] -> [B, C, *S / factor]`` (``S`` divisible by it).

    ``mode="conv"``: strided convolution with kernel ``2 * factor - 1`` (learned); ``mode="interp"``: average
    pooling (parameter-free).
    """

    def __init__(self, dims: int, channels: int, factor: int, mode: str) -> None:
        super().__init__()
        self.factor, self.mode, self.dims = factor, mode, dims
        if mode == "conv":
            self.conv = conv_nd(dims, channels, channels, 2 * factor - 1, stride=factor, padding=factor - 1)
        elif mode != "interp":
            raise ValueError(f"resample mode must be 'conv' or 'interp', got {mode!r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "conv":
            return self.conv(x)
        return F.avg_pool1d(x, self.factor) if self.dims == 1 else F.avg_pool2d(x, self.factor)


class Upsample(nn.Module):
    """Enlarge every spatial axis by ``factor``: ``[B, C, *S] -> [B, C, *S * factor]``.

    Nearest-neighbour repetition, followed for ``mode="conv"`` by a learned ``kernel_size`` convolution.
    """

    def __init__(self, dims: int, channels: int, factor: int, mode: str, kernel_size: int = 3) -> None:
        super().__init__()
        self.factor, self.mode = factor, mode
        if mode == "conv":
            self.conv = conv_nd(dims, channels, channels, kernel_size, padding=kernel_size // 2)
        elif mode != "interp":
            raise ValueError(f"resample mode must be 'conv' or 'interp', got {mode!r}")

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return self.conv(x) if self.mode == "conv" else x
