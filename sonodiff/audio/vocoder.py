"""Griffin-Lim vocoder: log-mel -> audio with no training (the fallback until a neural vocoder exists).

1. ``exp`` undoes the log; values at the log floor are treated as zero energy.
2. Mel -> linear-frequency magnitude by the Moore-Penrose pseudo-inverse of the filterbank (clamped at
   zero) or by non-negative least squares (projected gradient with Nesterov momentum, initialised at the
   pseudo-inverse), per frame: ``min_{S >= 0} || fb^T S - M ||^2``.
3. Phase by the fast Griffin-Lim algorithm, ``torchaudio.functional.griffinlim`` with momentum
   (Griffin & Lim 1984, "Signal estimation from modified short-time Fourier transform"; Perraudin,
   Balazs & Sondergaard 2013, "A fast Griffin-Lim algorithm"; momentum 0.99 as recommended there).
   Phases start at zero (``rand_init=False``), so the output is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sonodiff.audio.features import MelConfig, mel_filterbank, stft_window

__all__ = ["GriffinLimConfig", "GriffinLimVocoder", "mel_to_linear"]


@dataclass(frozen=True)
class GriffinLimConfig:
    """inverse: "pinv" or "nnls" (mel -> linear). nnls_iters: projected-gradient steps. n_iter: Griffin-Lim
    iterations. momentum: fast Griffin-Lim momentum in [0, 1)."""

    inverse: Literal["pinv", "nnls"] = "nnls"
    nnls_iters: int = 200
    n_iter: int = 64
    momentum: float = 0.99

    def __post_init__(self) -> None:
        if self.inverse not in ("pinv", "nnls"):
            raise ValueError(f"GriffinLimConfig.inverse={self.inverse!r}; valid: ['pinv', 'nnls']")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


def mel_to_linear(mel: Tensor, fb: Tensor, method: str = "nnls", iters: int = 200) -> Tensor:
    """Mel spectrum ``[..., n_mels, frames]`` (linear amplitude) -> ``[..., n_freqs, frames]``, ``>= 0``.

    ``fb``: filterbank ``[n_freqs, n_mels]`` with ``mel = fb^T @ spec``.
    """
    if method not in ("pinv", "nnls"):
        raise ValueError(f"unknown mel inverse {method!r}; valid: ['pinv', 'nnls']")
    a64 = fb.transpose(0, 1).to(torch.float64)  # [n_mels, n_freqs]
    pinv = torch.linalg.pinv(a64)
    if method == "pinv":
        return (pinv @ mel.to(torch.float64)).clamp_min(0.0).to(mel.dtype)
    # Projected gradient on 0.5 ||A s - m||^2 with step 1/L, L = ||A||_2^2, and Nesterov momentum, in float32
    # (the pseudo-inverse and L in float64; float64 iterations agree to ~1e-4 of the peak and take 3x as long).
    # Per step: r = A y - m, s' = max(y - (A^T / L) r, 0), y = s' + k/(k+3) (s' - s) as one lerp.
    a = a64.to(torch.float32)
    at_step = (a64.T / torch.linalg.matrix_norm(a64, ord=2) ** 2).to(torch.float32)
    m = mel.to(torch.float32)
    s = (pinv.to(torch.float32) @ m).clamp_min(0.0)
    y = s
    for k in range(iters):
        r = torch.matmul(a, y).sub_(m)
        s_new = (y - at_step @ r).clamp_min_(0.0)
        y = torch.lerp(s, s_new, 1.0 + k / (k + 3))
        s = s_new
    return s.to(mel.dtype)


class GriffinLimVocoder:
    """Log-mel ``[..., n_mels, frames]`` (natural log, as :func:`sonodiff.audio.features.log_mel`) -> audio
    ``[..., T]`` at ``mel_config.sample_rate``. For a mel codec's ``decode`` output ``[B, C, n_mels,
    frames]`` this gives ``[B, C, T]``. Follows the input's device.
    """

    def __init__(self, mel_config: MelConfig, config: GriffinLimConfig = GriffinLimConfig()) -> None:
        self.mel_config = mel_config
        self.config = config
        self.fb = mel_filterbank(mel_config)

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def __call__(self, logmel: Tensor, length: int | None = None) -> Tensor:
        import torchaudio.functional as AF

        mc = self.mel_config
        if logmel.ndim < 2 or logmel.shape[-2] != mc.n_mels:
            raise ValueError(f"expected log-mel [..., n_mels={mc.n_mels}, frames], got {tuple(logmel.shape)}")
        mel = logmel.float().exp()
        mel = torch.where(logmel <= torch.log(torch.tensor(mc.log_floor)) + 1e-6, torch.zeros_like(mel), mel)
        spec = mel_to_linear(mel, self.fb.to(mel.device), self.config.inverse, self.config.nnls_iters)
        lead = spec.shape[:-2]
        spec = spec.reshape(-1, *spec.shape[-2:])
        wl = mc.win_length or mc.n_fft
        wav = AF.griffinlim(spec, stft_window(mc, spec.device, spec.dtype), mc.n_fft, mc.hop_length, wl,
                            mc.power, self.config.n_iter, self.config.momentum, length, False)
        return wav.reshape(*lead, wav.shape[-1])
