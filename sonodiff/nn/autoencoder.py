"""A convolutional VAE for (normalised) log-mel spectrograms: the network of the ``latent`` codec.

``[B, C, n_mels, frames]`` -> a diagonal-Gaussian posterior over a latent ``[B, latent_channels, n_mels / f,
frames / f]`` with ``f = 2 ** (len(channels) - 1)`` (each level after the first halves both axes), and back. The
design follows the mel VAE of AudioLDM (Liu et al. 2023) and the KL autoencoder of latent diffusion (Rombach et al.
2022) at CPU size: residual blocks of two 3x3 convolutions with group norm and SiLU, strided-convolution
down-sampling, nearest-neighbour up-sampling, no attention. Frames must be a multiple of ``f`` (the codec pads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["MelAutoencoder", "MelAutoencoderConfig"]


@dataclass(frozen=True)
class MelAutoencoderConfig:
    in_channels: int = 1  # audio channels of the mel input
    n_mels: int = 64
    channels: tuple[int, ...] = (32, 64, 128)  # width per level; each level after the first halves both axes
    blocks: int = 1  # residual blocks per level (encoder and decoder)
    latent_channels: int = 8
    groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c <= 0 or c % self.groups for c in self.channels):
            raise ValueError(f"autoencoder channels must be positive multiples of groups={self.groups}, got "
                             f"{list(self.channels)}")
        if self.n_mels % self.factor:
            raise ValueError(f"n_mels={self.n_mels} is not divisible by the autoencoder's down-sampling factor "
                             f"{self.factor} ({len(self.channels)} levels)")
        if self.blocks < 1 or self.latent_channels < 1 or self.in_channels < 1:
            raise ValueError(f"autoencoder blocks, latent_channels and in_channels must be >= 1, got {self.blocks}, "
                             f"{self.latent_channels}, {self.in_channels}")

    @property
    def factor(self) -> int:
        """Down-sampling factor of each axis (frequency and time)."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "autoencoder") -> "MelAutoencoderConfig":
        from sonodiff.utils.config import from_dict

        return from_dict(cls, dict(d), where)


class _Res(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class MelAutoencoder(nn.Module):
    """``encode(x) -> (mean, logvar)``, ``decode(z) -> x_hat``; ``forward(x, noise)`` = the VAE pass."""

    def __init__(self, config: MelAutoencoderConfig = MelAutoencoderConfig()) -> None:
        super().__init__()
        self.config = c = config
        ch, g = c.channels, c.groups
        enc: list[nn.Module] = [nn.Conv2d(c.in_channels, ch[0], 3, padding=1)]
        for i, w in enumerate(ch):
            enc += [_Res(w, g) for _ in range(c.blocks)]
            if i + 1 < len(ch):
                enc.append(nn.Conv2d(w, ch[i + 1], 3, stride=2, padding=1))
        enc += [_Res(ch[-1], g), nn.GroupNorm(g, ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 2 * c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, ch[-1], 3, padding=1), _Res(ch[-1], g)]
        for i in reversed(range(len(ch))):
            dec += [_Res(ch[i], g) for _ in range(c.blocks)]
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, padding=1)]
        dec += [nn.GroupNorm(g, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def factor(self) -> int:
        return self.config.factor

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[2] != c.n_mels or x.shape[3] % c.factor:
            raise ValueError(f"autoencoder input must be [B, {c.in_channels}, {c.n_mels}, frames] with frames a "
                             f"multiple of {c.factor}; got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised log-mel ``[B, C, n_mels, frames]`` -> (mean, logvar) ``[B, L, n_mels/f, frames/f]``."""
        self._check(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mean, logvar) of ``x``; the latent is ``mean + exp(logvar / 2) * noise``
        (``noise`` None: the mean)."""
        mean, logvar = self.encode(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar
