"""Vocos-class neural vocoder: natural-log mel -> STFT coefficients -> audio through ``torch.istft``.

Siuzdak 2023, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders". The network
never upsamples in time: every layer runs at the mel frame rate, and the inverse STFT does the upsampling.

    h_0 = LN(Conv1d_k(log_mel))                                   # [B, frames, dim]
    h_l = h_{l-1} + gamma_l * W2 GELU(W1 LN(DWConv_k(h_{l-1})))  # ConvNeXt block (Liu et al. 2022)
    [m, p] = W_head LN(h_L)                                       # log-magnitude and angle per bin
    S = exp(min(m, log 100)) * (cos p + i sin p)                  # [B, head_n_fft // 2 + 1, frames]
    audio = iSTFT(S; head_n_fft, hop_length, hann, centred)       # [B, (frames - 1) * hop_length]

``gamma_l`` is the layer scale (Touvron et al. 2021, "Going deeper with image transformers"), a per-channel
vector initialised at ``layer_scale_init`` (Vocos: 1 / num_layers). The exponential is capped at 1e2, as in
Vocos, so a bad step cannot produce overflowing magnitudes.

Precision (DESIGN rule 7): the convolutions and MLPs run in the compute dtype (bf16 under autocast); the
layer norms, the residual stream, the head projection, ``exp``/``cos``/``sin`` and the iSTFT run in float32
(float64 when the model and input are float64). The head runs in float32 because a bf16 angle or
log-magnitude carries ~1% error straight into the waveform.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonodiff.audio.features import MelConfig

__all__ = ["ConvNeXtBlock", "NeuralVocoder", "NeuralVocoderConfig"]

_MAG_LOG_MAX = math.log(1e2)  # |S| <= 100, as Vocos clips exp(m)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class NeuralVocoderConfig:
    """Mel front-end (mirrors :class:`sonodiff.audio.features.MelConfig`) plus the generator architecture.

    Mel fields: sample_rate (Hz), n_fft, hop_length, win_length (None = n_fft) in samples; n_mels; f_min /
    f_max in Hz (f_max None = Nyquist); mel_scale "slaney" or "htk"; log_floor (mel magnitudes are clamped to
    at least this before the natural log). The vocoder's input is ``log_mel(audio, self.mel_config())``:
    magnitude (power 1), centred frames, hann window.

    Architecture: dim (channels of the ConvNeXt trunk), intermediate_dim (hidden width of each block's MLP),
    num_layers (ConvNeXt blocks), kernel_size (odd; embedding and depthwise convolutions), head_n_fft (FFT
    size of the output iSTFT; None = n_fft; even and >= 2 * hop_length), layer_scale_init (initial layer
    scale gamma; None = 1 / num_layers, as in Vocos).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int | None = None
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: Literal["slaney", "htk"] = "slaney"
    log_floor: float = 1e-5
    dim: int = 256
    intermediate_dim: int = 768
    num_layers: int = 8
    kernel_size: int = 7
    head_n_fft: int | None = None
    layer_scale_init: float | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("sample_rate", "n_fft", "hop_length", "n_mels", "dim", "intermediate_dim", "num_layers",
                  "kernel_size"):
            v = getattr(self, f)
            if not _is_int(v) or v <= 0:
                raise ValueError(f"{name}.{f}={v!r}; must be a positive int")
        for f in ("win_length", "head_n_fft"):
            v = getattr(self, f)
            if v is not None and (not _is_int(v) or v <= 0):
                raise ValueError(f"{name}.{f}={v!r}; must be a positive int or None (= n_fft)")
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"{name}.win_length={self.win_length} exceeds n_fft={self.n_fft}; "
                             "use win_length <= n_fft or None")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"{name}.mel_scale={self.mel_scale!r}; valid: ['slaney', 'htk']")
        if not (isinstance(self.log_floor, (int, float)) and self.log_floor > 0):
            raise ValueError(f"{name}.log_floor={self.log_floor!r}; must be a number > 0")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{name}.kernel_size={self.kernel_size}; must be odd so that 'same' padding "
                             "keeps the frame count")
        hn = self.resolved_head_n_fft
        if hn % 2 or hn < 2 * self.hop_length:
            raise ValueError(f"{name}.head_n_fft={hn} (None means n_fft={self.n_fft}); must be even and at "
                             f"least 2 * hop_length = {2 * self.hop_length} for a stable inverse STFT "
                             "(Vocos uses 4 * hop_length)")
        if self.layer_scale_init is not None and not (
                isinstance(self.layer_scale_init, (int, float)) and self.layer_scale_init > 0):
            raise ValueError(f"{name}.layer_scale_init={self.layer_scale_init!r}; must be > 0 or None "
                             "(= 1 / num_layers)")
        try:  # f_min / f_max / sample_rate consistency is MelConfig's rule; do not restate it here
            self.mel_config()
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e

    @property
    def resolved_head_n_fft(self) -> int:
        return self.head_n_fft if self.head_n_fft is not None else self.n_fft

    @property
    def resolved_layer_scale_init(self) -> float:
        return float(self.layer_scale_init) if self.layer_scale_init is not None else 1.0 / self.num_layers

    def mel_config(self) -> MelConfig:
        """The :class:`MelConfig` whose :func:`~sonodiff.audio.features.log_mel` is this vocoder's input."""
        return MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                         win_length=self.win_length, window="hann", n_mels=self.n_mels, f_min=self.f_min,
                         f_max=self.f_max, mel_scale=self.mel_scale, power=1.0, log_floor=self.log_floor,
                         center=True)

    @classmethod
    def from_mel_config(cls, mel_config: MelConfig, **arch) -> NeuralVocoderConfig:
        """Vocoder config for log-mels computed with ``mel_config``; ``arch`` sets architecture fields.

        ``mel_config`` must use magnitude (power 1.0), centred frames and a hann window: a vocoder for any
        other front-end would be trained on different features than it is later given.
        """
        if not isinstance(mel_config, MelConfig):
            raise ValueError(f"from_mel_config needs a MelConfig, got {type(mel_config).__name__}")
        bad = {k: v for k, v in (("power", 1.0), ("center", True), ("window", "hann"))
               if getattr(mel_config, k) != v}
        if bad:
            got = {k: getattr(mel_config, k) for k in bad}
            raise ValueError(f"NeuralVocoder needs log-mels with {bad}, got {got}; compute the features with "
                             "NeuralVocoderConfig.mel_config()")
        mel_keys = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max",
                    "mel_scale", "log_floor")
        arch_keys = [f.name for f in fields(cls) if f.name not in mel_keys]
        for k in arch:
            if k not in arch_keys:
                hint = difflib.get_close_matches(k, arch_keys, n=1)
                raise ValueError(f"unknown architecture field {k!r}" + (f"; did you mean {hint[0]!r}?" if hint
                                 else f"; valid: {arch_keys}"))
        return cls(**{k: getattr(mel_config, k) for k in mel_keys}, **arch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NeuralVocoderConfig:
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                hint = difflib.get_close_matches(k, names, n=1)
                raise ValueError(f"unknown {cls.__name__} key {k!r}" + (f"; did you mean {hint[0]!r}?" if hint
                                 else f"; valid: {names}"))
        return cls(**d)


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype (bf16, fp16, fp32) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _layer_norm_hi(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm over the last dim in float32 (float64 for float64 input), autocast off; returns that dtype."""
    dt = _float_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.layer_norm(x.to(dt), norm.normalized_shape, norm.weight.to(dt), norm.bias.to(dt), norm.eps)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block on ``[B, frames, dim]`` (Liu et al. 2022, "A ConvNet for the 2020s"; 1-D as in Vocos).

    ``x + gamma * W2 GELU(W1 LN(DWConv(x)))``; the depthwise convolution is "same"-padded, so the frame
    count is kept. The residual stream is float32 (float64 for a float64 model).
    """

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale_init: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, frames, dim]`` -> ``[B, frames, dim]`` in float32 (float64 for float64)."""
        wdt = self.dwconv.weight.dtype  # the compute dtype (autocast may lower it further)
        y = self.dwconv(x.transpose(1, 2).to(wdt)).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(_layer_norm_hi(y, self.norm).to(wdt))))
        return x + self.gamma.to(x.dtype) * y.to(x.dtype)


class NeuralVocoder(nn.Module):
    """Vocos generator: natural-log mel ``[B, n_mels, frames]`` -> audio ``[B, (frames - 1) * hop_length]``.

    The input is exactly ``sonodiff.audio.features.log_mel(audio, config.mel_config())``; a mel codec's
    ``[B, 1, n_mels, frames]`` gives ``[B, 1, T]``. Audio is at ``config.sample_rate`` Hz. Examples in a
    batch never interact. Follows the input's device; parameters in float32 by default.
    """

    def __init__(self, config: NeuralVocoderConfig = NeuralVocoderConfig()) -> None:
        super().__init__()
        if not isinstance(config, NeuralVocoderConfig):
            raise ValueError(f"NeuralVocoder needs a NeuralVocoderConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.embed = nn.Conv1d(c.n_mels, c.dim, c.kernel_size, padding=c.kernel_size // 2)
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.blocks = nn.ModuleList([ConvNeXtBlock(c.dim, c.intermediate_dim, c.kernel_size,
                                                   c.resolved_layer_scale_init) for _ in range(c.num_layers)])
        self.final_norm = nn.LayerNorm(c.dim, eps=1e-6)
        n = c.resolved_head_n_fft
        self.head = nn.Linear(c.dim, n + 2)  # log-magnitude and angle for n // 2 + 1 bins each
        self.register_buffer("window", torch.hann_window(n, periodic=True), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Vocos / ConvNeXt: truncated normal (std 0.02) weights, zero biases, for convolutions and linears.
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def num_frames_to_samples(self, frames: int) -> int:
        """Output length for ``frames`` mel frames: ``(frames - 1) * hop_length``."""
        return (frames - 1) * self.config.hop_length

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def spectrum(self, log_mel: Tensor) -> Tensor:
        """Predicted complex STFT ``[B, head_n_fft // 2 + 1, frames]`` (complex64; complex128 for float64)
        for ``log_mel [B, n_mels, frames]``."""
        x = self.embed(log_mel.to(self.embed.weight.dtype)).transpose(1, 2)  # [B, frames, dim]
        x = _layer_norm_hi(x, self.norm)
        for block in self.blocks:
            x = block(x)
        x = _layer_norm_hi(x, self.final_norm)
        dt = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = F.linear(x, self.head.weight.to(dt), self.head.bias.to(dt)).transpose(1, 2)  # [B, n + 2, F]
            logmag, angle = h.chunk(2, dim=1)
            mag = logmag.clamp(max=_MAG_LOG_MAX).exp()
            return torch.complex(mag * torch.cos(angle), mag * torch.sin(angle))

    def forward(self, log_mel: Tensor, length: int | None = None) -> Tensor:
        """``log_mel [B, n_mels, frames]`` -> audio ``[B, T]``; ``[B, 1, n_mels, frames]`` -> ``[B, 1, T]``.

        T = ``(frames - 1) * hop_length``, or exactly ``length`` samples when given (the tail is cut, or
        zero-padded). Audio is float32 (float64 for a float64 model), amplitude in [-1, 1] units.
        """
        c = self.config
        if not torch.is_tensor(log_mel) or not log_mel.is_floating_point():
            raise ValueError("NeuralVocoder expects a floating-point log-mel tensor [B, n_mels, frames], got "
                             f"{type(log_mel).__name__} {getattr(log_mel, 'dtype', '')}")
        squeeze_channel = log_mel.ndim == 4
        if squeeze_channel:
            if log_mel.shape[1] != 1:
                raise ValueError(f"NeuralVocoder takes one channel [B, 1, n_mels, frames], got "
                                 f"{tuple(log_mel.shape)}; fold channels into the batch first")
            log_mel = log_mel[:, 0]
        if log_mel.ndim != 3 or log_mel.shape[1] != c.n_mels:
            raise ValueError(f"expected log-mel [B, n_mels={c.n_mels}, frames] or [B, 1, n_mels, frames], got "
                             f"{tuple(log_mel.shape)}")
        if log_mel.shape[-1] < 2:
            raise ValueError(f"need at least 2 mel frames to synthesise audio, got {log_mel.shape[-1]}")
        if length is not None and (not _is_int(length) or length <= 0):
            raise ValueError(f"length={length!r}; must be a positive int (samples) or None")
        spec = self.spectrum(log_mel)
        n = c.resolved_head_n_fft
        with torch.autocast(device_type=spec.device.type, enabled=False):
            audio = torch.istft(spec, n, c.hop_length, n, window=self.window.to(spec.real.dtype), center=True)
        natural = audio.shape[-1]
        assert natural == self.num_frames_to_samples(log_mel.shape[-1]), (natural, log_mel.shape)
        if length is not None and length != natural:
            audio = audio[:, :length] if length < natural else F.pad(audio, (0, length - natural))
        return audio[:, None] if squeeze_channel else audio
