"""`UNetConfig`: the frozen, JSON-serialisable description of a :class:`sonodiff.nn.unet.UNet`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

__all__ = ["UNetConfig"]

Resample = Literal["conv", "interp"]
Positions = Literal["rope", "none"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net. Per-level tuples all have one entry per resolution level.

    Fields:
        dims: 1 for ``[B, C, T]`` (waveforms, 1-D latents), 2 for ``[B, C, H, W]`` (mels, images).
        in_channels / out_channels: channels of ``x`` and of the output ``F`` (usually equal).
        channels: feature channels per level, e.g. ``(64, 128, 256)``.
        blocks: residual blocks per level on the way down (the way up has one more, for the extra skip).
        factors: down-sampling factor between level ``i`` and ``i + 1`` (``len(channels) - 1`` entries), applied
            to every spatial axis; 1-D audio typically uses 2, 4 or 8.
        attention: per level, whether residual blocks are followed by an attention layer (self-attention,
            plus cross-attention when ``token_dim > 0``).
        mid_attention: attention layer between the two residual blocks of the bottleneck.
        head_dim: channels per attention head (heads = channels // head_dim).
        ff_mult: hidden width multiplier of the feed-forward sublayer of attention layers (0 = none).
        dropout: dropout probability inside residual blocks.
        kernel_size: convolution kernel size (odd).
        groups: GroupNorm groups; must divide every entry of ``channels``.
        resample: ``"conv"`` (strided conv down, nearest + conv up; learned) or ``"interp"`` (average pool
            down, nearest up; parameter-free).
        positions: ``"rope"`` (rotary positions in self-attention; axial for 2-D) or ``"none"``.
        concat_channels: channels of ``cond.concat`` concatenated to ``x`` at the input (0 = route off).
        token_dim: width ``D`` of cross-attention tokens ``cond.tokens [B, L, D]`` (0 = route off).
        pooled_dim: width ``D`` of ``cond.pooled [B, D]`` added to the noise embedding (0 = route off).
        emb_mult: noise-embedding width = ``emb_mult * channels[0]``.
        noise_freqs: number of sinusoidal frequencies of the noise-level features.
        patch: side of the non-overlapping patches the first level works on (1 = full resolution). With
            ``patch = p`` the input is folded space-to-depth (``p ** dims`` times the channels, ``1 / p`` the size
            on every axis) before ``conv_in`` and unfolded after ``conv_out``, as DiT / U-ViT patching and
            Simple Diffusion's space-to-depth do: a ``p ** dims``-fold cut of the network's compute for the same
            channels and depth, at the cost of detail finer than a patch (measured in recipes/README.md).
    """

    dims: int = 2
    in_channels: int = 1
    out_channels: int = 1
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: tuple[int, ...] = (2, 2, 2)
    factors: tuple[int, ...] = (2, 2)
    attention: tuple[bool, ...] = (False, True, True)
    mid_attention: bool = True
    head_dim: int = 64
    ff_mult: int = 0
    dropout: float = 0.0
    kernel_size: int = 3
    groups: int = 32
    resample: Resample = "conv"
    positions: Positions = "rope"
    concat_channels: int = 0
    token_dim: int = 0
    pooled_dim: int = 0
    emb_mult: int = 4
    noise_freqs: int = 128
    patch: int = 1

    def __post_init__(self) -> None:
        # JSON gives lists; store tuples so the config stays hashable and immutable.
        for name in ("channels", "blocks", "factors", "attention"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
            if not isinstance(getattr(self, name), tuple):
                raise TypeError(f"UNetConfig.{name} must be a tuple (one entry per level), got {v!r}")
        if self.dims not in (1, 2):
            raise ValueError(f"UNetConfig.dims must be 1 or 2, got {self.dims!r}")
        levels = len(self.channels)
        if levels < 1 or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"UNetConfig.channels must be positive ints, got {self.channels}")
        for name, n in (("blocks", levels), ("attention", levels), ("factors", levels - 1)):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"UNetConfig.{name} needs {n} entries for {levels} levels (channels={self.channels}), "
                    f"got {getattr(self, name)}"
                )
        if any(not isinstance(b, int) or b < 1 for b in self.blocks):
            raise ValueError(f"UNetConfig.blocks must be ints >= 1, got {self.blocks}")
        if any(not isinstance(f, int) or f < 2 for f in self.factors):
            raise ValueError(f"UNetConfig.factors must be ints >= 2, got {self.factors}")
        if any(not isinstance(a, bool) for a in self.attention):
            raise ValueError(f"UNetConfig.attention must be bools, got {self.attention}")
        bad = [c for c in self.channels if c % self.groups != 0]
        if bad:
            raise ValueError(
                f"UNetConfig.groups={self.groups} must divide every channel count; it does not divide {bad}"
            )
        attn_ch = [c for c, a in zip(self.channels, self.attention) if a]
        if self.mid_attention:
            attn_ch.append(self.channels[-1])
        bad = [c for c in attn_ch if c % self.head_dim != 0]
        if bad:
            raise ValueError(
                f"UNetConfig.head_dim={self.head_dim} must divide the channels of attention levels; not {bad}"
            )
        if self.positions == "rope" and attn_ch and self.head_dim % (2 * self.dims) != 0:
            raise ValueError(
                f"positions='rope' needs head_dim divisible by {2 * self.dims}, got {self.head_dim}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"UNetConfig.kernel_size must be odd and positive, got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("in_channels", "out_channels", "emb_mult", "noise_freqs", "patch"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("concat_channels", "token_dim", "pooled_dim", "ff_mult"):
            if getattr(self, name) < 0:
                raise ValueError(f"UNetConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name, lit in (("resample", Resample), ("positions", Positions)):
            if getattr(self, name) not in get_args(lit):
                raise ValueError(
                    f"UNetConfig.{name} must be one of {get_args(lit)}, got {getattr(self, name)!r}"
                )

    @property
    def total_factor(self) -> int:
        """Patch side times the product of the down-sampling factors: spatial sizes are padded to a multiple of it."""
        out = self.patch
        for f in self.factors:
            out *= f
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`. Unknown keys and wrong types are errors (with the closest valid name)."""
        from sonodiff.utils.config import from_dict

        return from_dict(cls, dict(d), "UNetConfig")
