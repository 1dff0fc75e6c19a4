"""GAN discriminators for vocoder training: multi-period (waveform) and multi-resolution (spectrogram).

- Multi-period discriminator, MPD (Kong, Kim & Bae 2020, "HiFi-GAN: Generative adversarial networks for
  efficient and high fidelity speech synthesis", sec. 2.2): for each period p the waveform ``[B, T]`` is
  reflect-padded to a multiple of p and folded to ``[B, 1, T / p, p]``; 2-D convolutions with kernels
  ``(k, 1)`` then see samples p apart, i.e. the periodic structure at that period.
- Multi-resolution discriminator, MRD (Jang et al. 2021, "UnivNet: A neural vocoder with multi-resolution
  spectrogram discriminators for high-fidelity waveform generation"; used by Vocos): for each STFT
  resolution (n_fft, hop, win) a 2-D CNN over the magnitude spectrogram ``[B, 1, frames, n_fft // 2 + 1]``.

Every sub-discriminator returns a logit map and the activations of its hidden layers (for feature
matching). All layers are weight-normalised (Salimans & Kingma 2016) with
``torch.nn.utils.parametrizations.weight_norm``. There is no batch norm, so examples never interact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from sonodiff.audio.features import MelConfig, stft_magnitude

__all__ = [
    "DiscriminatorConfig",
    "Discriminators",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "PeriodDiscriminator",
    "ResolutionDiscriminator",
    "default_resolutions",
]

_LRELU_SLOPE = 0.1  # HiFi-GAN and UnivNet


def default_resolutions(sample_rate: int) -> tuple[tuple[int, int, int], ...]:
    """UnivNet / Vocos MRD resolutions (n_fft 512, 1024, 2048 at 24 kHz, hop n_fft / 4, win n_fft) scaled to
    ``sample_rate`` (Hz): each n_fft is the power of two nearest ``n_fft * sample_rate / 24000`` (at least
    32). At 8 kHz: (128, 32, 128), (256, 64, 256), (512, 128, 512)."""
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}; must be a positive int (Hz)")
    out = []
    for n in (512, 1024, 2048):
        n_fft = max(32, 2 ** round(math.log2(n * sample_rate / 24000)))
        out.append((n_fft, n_fft // 4, n_fft))
    return tuple(out)


def _positive_ints(name: str, values, min_len: int = 1) -> None:
    if not isinstance(values, tuple) or len(values) < min_len or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{name}={values!r}; must be a tuple of at least {min_len} positive ints")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Settings for :class:`Discriminators` (MPD + MRD); defaults are sized for CPU training.

    sample_rate: Hz, used for the default MRD resolutions. periods: MPD periods (samples; HiFi-GAN's primes
    2, 3, 5, 7, 11). mpd_channels: output channels of the MPD's strided ``(kernel, 1)`` convolutions
    (HiFi-GAN: 32, 128, 512, 1024; a further stride-1 layer keeps the last width). mpd_kernel_size,
    mpd_stride: along the folded time axis. resolutions: MRD ``(n_fft, hop, win)`` triples, None =
    :func:`default_resolutions` of sample_rate. mrd_channels: width of every MRD layer (UnivNet: 32).
    mrd_layers: number of MRD convolutions before the output layer (UnivNet: 5).
    """

    sample_rate: int = 16000
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = (32, 64, 128, 256)
    mpd_kernel_size: int = 5
    mpd_stride: int = 3
    resolutions: tuple[tuple[int, int, int], ...] | None = None
    mrd_channels: int = 32
    mrd_layers: int = 5

    def __post_init__(self) -> None:
        default_resolutions(self.sample_rate)  # validates sample_rate
        _positive_ints("DiscriminatorConfig.periods", self.periods)
        _positive_ints("DiscriminatorConfig.mpd_channels", self.mpd_channels)
        for f in ("mpd_kernel_size", "mpd_stride", "mrd_channels", "mrd_layers"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"DiscriminatorConfig.{f}={v!r}; must be a positive int")
        if self.mpd_kernel_size % 2 == 0:
            raise ValueError(f"DiscriminatorConfig.mpd_kernel_size={self.mpd_kernel_size}; must be odd")
        if self.mrd_layers < 2:
            raise ValueError(f"DiscriminatorConfig.mrd_layers={self.mrd_layers}; must be >= 2")
        if self.resolutions is not None:
            if not isinstance(self.resolutions, tuple) or not self.resolutions:
                raise ValueError(f"DiscriminatorConfig.resolutions={self.resolutions!r}; must be None or a "
                                 "non-empty tuple of (n_fft, hop, win) triples")
            for r in self.resolutions:
                _positive_ints("DiscriminatorConfig.resolutions entry", r, 3)
                if len(r) != 3 or r[2] > r[0]:
                    raise ValueError(f"DiscriminatorConfig.resolutions entry {r!r}; must be (n_fft, hop, win) "
                                     "with win <= n_fft")

    @property
    def resolved_resolutions(self) -> tuple[tuple[int, int, int], ...]:
        return self.resolutions if self.resolutions is not None else default_resolutions(self.sample_rate)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_audio(audio: Tensor, who: str) -> Tensor:
    """``[B, T]`` or ``[B, 1, T]`` -> ``[B, T]``; raises on anything else."""
    if not torch.is_tensor(audio) or not audio.is_floating_point():
        raise ValueError(f"{who} expects floating-point audio [B, T], got {type(audio).__name__} "
                         f"{getattr(audio, 'dtype', '')}")
    if audio.ndim == 3 and audio.shape[1] == 1:
        return audio[:, 0]
    if audio.ndim != 2:
        raise ValueError(f"{who} expects audio [B, T] or [B, 1, T], got {tuple(audio.shape)}")
    return audio


def _run_all(discriminators, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
    """(logits of each sub-discriminator, features of each) on ``audio [B, T]``."""
    logits, feats = [], []
    for d in discriminators:
        lg, ft = d(audio)
        logits.append(lg)
        feats.append(ft)
    return logits, feats


class PeriodDiscriminator(nn.Module):
    """One MPD sub-discriminator (period p): ``audio [B, T]`` -> (logits ``[B, 1, T', p]``, features)."""

    def __init__(self, period: int, channels: tuple[int, ...], kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        pad = (kernel_size // 2, 0)
        convs, c_in = [], 1
        for c_out in channels:
            convs.append(weight_norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), pad)))
            c_in = c_out
        convs.append(weight_norm(nn.Conv2d(c_in, c_in, (kernel_size, 1), 1, pad)))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(c_in, 1, (3, 1), 1, (1, 0)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        p = self.period
        b, t = audio.shape
        if t % p:
            if t <= p - t % p:
                raise ValueError(f"audio of {t} samples is too short for period {p}")
            audio = F.pad(audio[:, None], (0, p - t % p), mode="reflect")[:, 0]
        x = audio.reshape(b, 1, -1, p)  # [B, 1, T / p, p]: column j holds samples j, j + p, j + 2p, ...
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _LRELU_SLOPE)
            feats.append(x)
        return self.post(x), feats


class ResolutionDiscriminator(nn.Module):
    """One MRD sub-discriminator: ``audio [B, T]`` -> |STFT| ``[B, 1, frames, n_fft // 2 + 1]`` -> 2-D CNN
    (UnivNet: kernels (3, 9), striding 2 along frequency as in Vocos, then (3, 3)) -> (logits, features)."""

    def __init__(self, n_fft: int, hop: int, win: int, channels: int = 32, layers: int = 5) -> None:
        super().__init__()
        self.resolution = (n_fft, hop, win)
        # The spectrogram is an STFT magnitude; sonodiff.audio.features computes it (sample_rate unused).
        self.stft = MelConfig(sample_rate=16000, n_fft=n_fft, hop_length=hop, win_length=win, power=1.0,
                              center=True)
        convs = [weight_norm(nn.Conv2d(1, channels, (3, 9), 1, (1, 4)))]
        convs += [weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), (1, 4))) for _ in range(layers - 2)]
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), 1, (1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), 1, (1, 1)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        n_fft = self.resolution[0]
        if audio.shape[-1] <= n_fft // 2:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short for the MRD resolution "
                             f"{self.resolution}; need more than {n_fft // 2}")
        with torch.autocast(device_type=audio.device.type, enabled=False):  # the STFT in float32
            mag = stft_magnitude(audio.float(), self.stft)  # [B, F, frames]
        x = mag.transpose(1, 2)[:, None].to(self.post.weight.dtype)  # [B, 1, frames, F]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _LRELU_SLOPE)
            feats.append(x)
        return self.post(x), feats


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN MPD: one :class:`PeriodDiscriminator` per period.

    ``forward(audio [B, T])`` -> (logits: one ``[B, 1, T', p]`` per period, features: one list of hidden
    activations per period).
    """

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: tuple[int, ...] = (32, 64, 128, 256),
                 kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        _positive_ints("periods", tuple(periods))
        _positive_ints("channels", tuple(channels))
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, tuple(channels), kernel_size, stride)
                                            for p in periods)

    def forward(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        return _run_all(self.discriminators, _check_audio(audio, type(self).__name__))


class MultiResolutionDiscriminator(nn.Module):
    """UnivNet / Vocos MRD: one :class:`ResolutionDiscriminator` per ``(n_fft, hop, win)``.

    ``forward(audio [B, T])`` -> (logits: one ``[B, 1, frames, F']`` per resolution, features: one list of
    hidden activations per resolution).
    """

    def __init__(self, resolutions: tuple[tuple[int, int, int], ...], channels: int = 32, layers: int = 5) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionDiscriminator needs at least one (n_fft, hop, win) resolution")
        for r in resolutions:
            _positive_ints("resolution", tuple(r), 3)
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(*r, channels=channels, layers=layers)
                                            for r in resolutions)

    def forward(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        return _run_all(self.discriminators, _check_audio(audio, type(self).__name__))


class Discriminators(nn.Module):
    """MPD and MRD together: ``forward(audio [B, T])`` -> (logits, features), MPD entries first, then MRD.

    ``len(logits) == len(config.periods) + len(config.resolved_resolutions)``.
    """

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        if not isinstance(config, DiscriminatorConfig):
            raise ValueError(f"Discriminators needs a DiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.mpd = MultiPeriodDiscriminator(config.periods, config.mpd_channels, config.mpd_kernel_size,
                                            config.mpd_stride)
        self.mrd = MultiResolutionDiscriminator(config.resolved_resolutions, config.mrd_channels,
                                                config.mrd_layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits_p, feats_p = self.mpd(audio)
        logits_r, feats_r = self.mrd(audio)
        return logits_p + logits_r, feats_p + feats_r
