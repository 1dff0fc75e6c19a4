"""Diffusion-space features -> audio, and joining audio pieces without clicks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["features_to_audio", "crossfade_join", "equal_power_fade"]


def features_to_audio(codec, z: Tensor, length: int | None = None, vocoder=None) -> Tensor:
    """Features ``[B, C, ...]`` in diffusion space -> audio ``[B, C, T]`` at ``codec.sample_rate``.

    Mel and latent codecs (``codec.mel_config`` set) are voiced by ``vocoder`` (:func:`sonodiff.models.vocoders.load_vocoder`; None = Griffin-Lim with
    the codec's settings); ``length`` fixes the number of output samples (for mel: default (frames - 1) * hop).
    """
    data = codec.decode(z.float())
    if codec.mel_config is not None:  # mel and latent codecs decode to log-mel
        if vocoder is None:
            from sonodiff.models.vocoders import load_vocoder

            vocoder = load_vocoder("griffin_lim", expect=codec.mel_config)
        if length is not None:  # a latent codec decodes whole latent frames: drop mel frames past ``length``
            data = data[..., : max(1, codec.mel_config.num_frames(length))]
        return vocoder(data, length=length)
    if vocoder is not None:
        raise ValueError(f"a {codec.name!r} codec decodes to audio itself; it takes no vocoder")
    if length is not None:
        data = data[..., :length]
    return data


def equal_power_fade(n: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """(fade_out, fade_in) ramps of ``n`` samples with fade_out^2 + fade_in^2 = 1."""
    t = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n
    return torch.cos(t * torch.pi / 2).to(dtype), torch.sin(t * torch.pi / 2).to(dtype)


def crossfade_join(a: Tensor, b: Tensor, overlap: int) -> Tensor:
    """Join ``a`` ``[..., Ta]`` and ``b`` ``[..., Tb]`` whose last / first ``overlap`` samples cover the same time."""
    if overlap == 0:
        return torch.cat([a, b], dim=-1)
    if overlap > min(a.shape[-1], b.shape[-1]):
        raise ValueError(f"overlap {overlap} exceeds a piece ({a.shape[-1]}, {b.shape[-1]} samples)")
    fo, fi = equal_power_fade(overlap, a.device, a.dtype)
    mid = a[..., -overlap:] * fo + b[..., :overlap] * fi
    return torch.cat([a[..., :-overlap], mid, b[..., overlap:]], dim=-1)
