"""Log-mel spectrograms: STFT -> mel filterbank -> log with a floor; batched, on any device.

The mel filterbank is ``torchaudio.functional.melscale_fbanks``: triangular filters on the Slaney
(Auditory Toolbox; linear below 1 kHz, logarithmic above; area-normalised) or HTK
(``2595 log10(1 + f / 700)``; peak-normalised to 1) mel scale. With ``mel_scale="slaney"`` the
filterbank matches ``librosa.filters.mel(htk=False, norm="slaney")``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["MelConfig", "log_mel", "mel_filterbank", "mel_frequencies", "stft_magnitude"]


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel-filterbank settings.

    sample_rate: Hz of the input audio. n_fft: FFT size (samples). hop_length: samples between frames.
    win_length: window length (None = n_fft). window: window function. n_mels: number of mel bins.
    f_min / f_max: filterbank edges in Hz (f_max None = Nyquist). mel_scale: "slaney" (area-normalised
    filters) or "htk" (peak-normalised). power: 1 = magnitude, 2 = power spectrogram. log_floor: values
    are clamped to at least this before the natural log, so silence maps to ``log(log_floor)``.
    center: pad the signal by n_fft // 2 (reflect) on both sides so frame k is centred at k * hop.
    Frames: ``T // hop_length + 1`` with center=True.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int | None = None
    window: Literal["hann", "hamming"] = "hann"
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: Literal["slaney", "htk"] = "slaney"
    power: float = 1.0
    log_floor: float = 1e-5
    center: bool = True

    def __post_init__(self) -> None:
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"MelConfig.window={self.window!r}; valid: ['hann', 'hamming']")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"MelConfig.mel_scale={self.mel_scale!r}; valid: ['slaney', 'htk']")
        if self.power not in (1.0, 2.0):
            raise ValueError(f"MelConfig.power={self.power}; valid: 1.0 (magnitude) or 2.0 (power)")
        fmax = self.nyquist_f_max
        if not 0 <= self.f_min < fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                             f"f_max={self.f_max}, sample_rate={self.sample_rate}")
        if self.log_floor <= 0:
            raise ValueError(f"MelConfig.log_floor must be > 0, got {self.log_floor}")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in (0, n_fft={self.n_fft}], got {self.win_length}")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.n_fft <= 0:
            raise ValueError("n_fft, hop_length and n_mels must be positive")

    @property
    def nyquist_f_max(self) -> float:
        return float(self.f_max) if self.f_max is not None else self.sample_rate / 2

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        if self.center:
            return num_samples // self.hop_length + 1
        return max(0, (num_samples - self.n_fft) // self.hop_length + 1)

    def to_dict(self) -> dict:
        return asdict(self)


def stft_window(cfg: MelConfig, device, dtype) -> Tensor:
    """The analysis window ``[win_length]`` (periodic), cached per device and dtype; do not modify it."""
    return _window(cfg.window, cfg.win_length or cfg.n_fft, torch.device(device) if device else None, dtype)


@functools.lru_cache(maxsize=32)
def _window(kind: str, length: int, device, dtype) -> Tensor:
    fn = torch.hann_window if kind == "hann" else torch.hamming_window
    return fn(length, periodic=True, device=device, dtype=dtype)


def mel_filterbank(cfg: MelConfig, device=None, dtype=torch.float32) -> Tensor:
    """Mel filterbank ``[n_freqs, n_mels]`` (``mel = spec^T @ fb``)."""
    import torchaudio.functional as AF

    norm = "slaney" if cfg.mel_scale == "slaney" else None
    fb = AF.melscale_fbanks(cfg.n_freqs, float(cfg.f_min), cfg.nyquist_f_max, cfg.n_mels,
                            cfg.sample_rate, norm=norm, mel_scale=cfg.mel_scale)
    return fb.to(device=device, dtype=dtype)


def _hz_to_mel(f: Tensor, scale: str) -> Tensor:
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    # Slaney (Auditory Toolbox): linear (200/3 Hz per mel) below 1 kHz, log step ln(6.4)/27 above.
    lin = f / (200.0 / 3)
    log = 15.0 + torch.log(f.clamp_min(1e-10) / 1000.0) / (torch.log(torch.tensor(6.4, dtype=f.dtype)) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: Tensor, scale: str) -> Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * (200.0 / 3)
    log = 1000.0 * torch.exp((torch.log(torch.tensor(6.4, dtype=m.dtype)) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, lin)


def mel_frequencies(cfg: MelConfig) -> Tensor:
    """Centre frequency (Hz, float64) of each mel bin ``[n_mels]`` on ``cfg.mel_scale``."""
    edges = torch.tensor([float(cfg.f_min), cfg.nyquist_f_max], dtype=torch.float64)
    lo, hi = _hz_to_mel(edges, cfg.mel_scale).tolist()
    pts = torch.linspace(lo, hi, cfg.n_mels + 2, dtype=torch.float64)
    return _mel_to_hz(pts, cfg.mel_scale)[1:-1]


def stft_magnitude(audio: Tensor, cfg: MelConfig) -> Tensor:
    """``|STFT| ** cfg.power`` of ``audio [..., T]`` -> ``[..., n_freqs, frames]`` (input's device/dtype)."""
    if audio.ndim < 1 or audio.shape[-1] == 0:
        raise ValueError(f"stft_magnitude needs audio [..., T] with T > 0, got {tuple(audio.shape)}")
    lead = audio.shape[:-1]
    x = audio.reshape(-1, audio.shape[-1])
    if cfg.center and x.shape[-1] <= cfg.n_fft // 2:
        raise ValueError(f"audio of {x.shape[-1]} samples is too short for reflect padding with "
                         f"n_fft={cfg.n_fft}; need more than {cfg.n_fft // 2} samples")
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length or cfg.n_fft,
                      window=stft_window(cfg, x.device, x.dtype), center=cfg.center, pad_mode="reflect",
                      return_complex=True)
    mag = spec.abs()
    if cfg.power == 2.0:
        mag = mag.pow(2)
    return mag.reshape(*lead, *mag.shape[-2:])


def log_mel(audio: Tensor, cfg: MelConfig, fb: Tensor | None = None) -> Tensor:
    """Natural-log mel spectrogram of ``audio [..., T]`` -> ``[..., n_mels, frames]``.

    ``log(max(fb^T |STFT|^power, log_floor))``. Runs on the input's device in its dtype (float32
    recommended); ``fb`` may be passed to reuse a precomputed :func:`mel_filterbank`.
    """
    mag = stft_magnitude(audio, cfg)
    if fb is None:
        fb = mel_filterbank(cfg, mag.device, mag.dtype)
    mel = torch.matmul(mag.transpose(-1, -2), fb).transpose(-1, -2)
    return mel.clamp_min(cfg.log_floor).log()
