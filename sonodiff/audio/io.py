"""Audio files <-> float32 tensors ``[C, T]``, channel policy, resampling, normalisation, trimming.

Files are read and written with soundfile (libsndfile): WAV, FLAC, OGG/Vorbis and, with libsndfile
>= 1.1, MP3. ``torchaudio.load``/``save`` are not used (in torchaudio 2.9+ they need torchcodec).
Audio always travels with its sample rate: loaders return ``(audio [C, T] float32, sample_rate Hz)``.

Nothing here fixes bad input silently: NaN/inf samples, empty signals, unknown policies and
out-of-range values raise ``ValueError`` saying what was given and what is allowed.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sonodiff.utils.atomic import atomic_path, atomic_write_json

__all__ = [
    "AUDIO_EXTENSIONS",
    "CHANNEL_POLICIES",
    "RESAMPLE_QUALITY",
    "apply_channel_policy",
    "load_audio",
    "loudness",
    "loudness_normalize",
    "peak_normalize",
    "resample",
    "rms_normalize",
    "scale_down_peak",
    "save_audio",
    "silence_bounds",
    "trim_silence",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

ChannelPolicy = Literal["mono", "stereo", "keep"]
CHANNEL_POLICIES: tuple[str, ...] = ("mono", "stereo", "keep")

# Resampling presets for torchaudio.functional.resample (band-limited windowed-sinc interpolation).
# "fast": torchaudio's defaults: Hann-windowed sinc, 6 zero crossings, cutoff at 0.99 x Nyquist.
# "high": the "kaiser_best" setting of resampy/librosa: Kaiser window (beta 14.77), 64 zero crossings,
#         cutoff at 0.9476 x Nyquist: > 100 dB stop-band attenuation, slower (longer filter).
RESAMPLE_QUALITY: dict[str, dict[str, Any]] = {
    "fast": {"lowpass_filter_width": 6, "rolloff": 0.99, "resampling_method": "sinc_interp_hann"},
    "high": {
        "lowpass_filter_width": 64,
        "rolloff": 0.9475937167399596,
        "resampling_method": "sinc_interp_kaiser",
        "beta": 14.769656459379492,
    },
}


def _check_audio(audio: Tensor, name: str = "audio") -> None:
    if not torch.is_tensor(audio) or audio.ndim < 2:
        raise ValueError(f"{name} must be a tensor [..., C, T], got {type(audio).__name__} "
                         f"{tuple(audio.shape) if torch.is_tensor(audio) else ''}")
    if not torch.isfinite(audio).all():
        raise ValueError(f"{name} contains NaN or inf samples; clean the input first")


def apply_channel_policy(audio: Tensor, policy: ChannelPolicy) -> Tensor:
    """Apply a channel policy to ``audio [C, T]`` (or ``[B, C, T]``).

    - ``"mono"``: average all channels -> ``[1, T]``.
    - ``"stereo"``: mono is duplicated to two channels; two channels are kept; more raises.
    - ``"keep"``: unchanged.
    """
    if policy not in CHANNEL_POLICIES:
        raise ValueError(f"unknown channel policy {policy!r}; valid: {list(CHANNEL_POLICIES)}")
    c = audio.shape[-2]
    if policy == "mono":
        return audio.mean(dim=-2, keepdim=True)
    if policy == "stereo":
        if c == 1:
            return torch.cat([audio, audio], dim=-2)
        if c == 2:
            return audio
        raise ValueError(f"channel policy 'stereo' needs 1 or 2 channels, got {c}; use 'mono' or 'keep'")
    return audio


def resample(audio: Tensor, orig_sr: int, new_sr: int, quality: str = "high") -> Tensor:
    """Resample ``audio [..., T]`` from ``orig_sr`` to ``new_sr`` Hz with torchaudio's windowed sinc.

    ``quality`` is a key of :data:`RESAMPLE_QUALITY` (documented there). Output length is
    ``ceil(T * new_sr / orig_sr)``. Follows the input's device and dtype.
    """
    if quality not in RESAMPLE_QUALITY:
        raise ValueError(f"unknown resample quality {quality!r}; valid: {list(RESAMPLE_QUALITY)}")
    if int(orig_sr) <= 0 or int(new_sr) <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return audio
    return _resampler(int(orig_sr), int(new_sr), quality, audio.device, audio.dtype)(audio)


@functools.lru_cache(maxsize=32)
def _resampler(orig_sr: int, new_sr: int, quality: str, device: torch.device, dtype: torch.dtype):
    """A ``torchaudio.transforms.Resample`` with its filter kernel built once per rate pair (building it
    costs as much as applying it to a short clip)."""
    import torchaudio.transforms as AT

    return AT.Resample(orig_sr, new_sr, dtype=dtype, **RESAMPLE_QUALITY[quality]).to(device)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    channels: ChannelPolicy = "keep",
    quality: str = "high",
) -> tuple[Tensor, int]:
    """Read an audio file into ``(audio [C, T] float32 in [-1, 1] for PCM, sample_rate Hz)``.

    ``sample_rate``: resample to this rate (None keeps the file's). ``channels``: a channel policy
    (see :func:`apply_channel_policy`). Raises ``ValueError`` for empty or non-finite audio and
    ``soundfile.LibsndfileError`` for unreadable files.
    """
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"{path}: file has zero samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if not torch.isfinite(audio).all():
        raise ValueError(f"{path}: file contains NaN or inf samples")
    audio = apply_channel_policy(audio, channels)
    if sample_rate is not None and sample_rate != sr:
        audio = resample(audio, sr, sample_rate, quality)
        sr = sample_rate
    return audio.contiguous(), int(sr)


_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def save_audio(
    path: str | os.PathLike,
    audio: Tensor,
    sample_rate: int,
    subtype: str = "PCM_16",
    sidecar: dict[str, Any] | None = None,
) -> Path:
    """Atomically write ``audio [C, T]`` to a ``.wav`` or ``.flac`` file (temp file, fsync, rename).

    ``subtype`` is a soundfile subtype (``PCM_16``, ``PCM_24``, ``FLOAT`` for WAV). Integer subtypes
    need samples in [-1, 1]; values outside raise instead of being clipped. ``sidecar``: a JSON-able
    dict written atomically next to the file as ``<stem>.json``. Returns the path written.
    """
    import soundfile as sf

    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_audio writes {list(_FORMATS)} files, got {path.name!r}")
    if audio.ndim != 2:
        raise ValueError(f"save_audio expects audio [C, T], got shape {tuple(audio.shape)}")
    _check_audio(audio)
    if not subtype.startswith("FLOAT") and not subtype.startswith("DOUBLE"):
        peak = float(audio.abs().max()) if audio.numel() else 0.0
        if peak > 1.0:
            raise ValueError(f"peak {peak:.3f} > 1 cannot be stored as {subtype} without clipping; "
                             "normalise first or use subtype='FLOAT' (WAV)")
    data = audio.detach().to("cpu", torch.float32).T.numpy()
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=int(sample_rate), channels=data.shape[1],
                          format=fmt, subtype=subtype) as f:
            f.write(data)
    if sidecar is not None:
        atomic_write_json(path.with_suffix(".json"), sidecar, indent=1, sort_keys=True)
    return path


def _db_gain(audio: Tensor, gain_db: Tensor) -> Tensor:
    return audio * (10.0 ** (gain_db / 20.0)).to(audio.dtype)


def scale_down_peak(audio, ceiling: float = 0.999):
    """Generated audio can overshoot full scale: ``audio`` (a tensor or a numpy array) with a peak over 1 scaled so
    its peak is ``ceiling`` (never clipped), and that peak for the sidecar (``scaled_from_peak``); audio within
    range as is and ``None``."""
    peak = float(abs(audio).max()) if 0 not in audio.shape else 0.0
    if peak > 1.0:
        return audio / peak * ceiling, peak
    return audio, None


def peak_normalize(audio: Tensor, target_db: float = -1.0) -> Tensor:
    """Scale each signal of ``audio [..., C, T]`` so its absolute peak is ``target_db`` dBFS."""
    _check_audio(audio)
    peak = audio.abs().amax(dim=(-2, -1), keepdim=True)
    if (peak == 0).any():
        raise ValueError("peak_normalize got an all-zero signal; there is no level to normalise")
    return audio * (10.0 ** (target_db / 20.0) / peak)


def rms_normalize(audio: Tensor, target_db: float = -20.0) -> Tensor:
    """Scale each signal of ``audio [..., C, T]`` to an RMS (over channels and time) of ``target_db`` dBFS."""
    _check_audio(audio)
    rms = audio.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    if (rms == 0).any():
        raise ValueError("rms_normalize got an all-zero signal; there is no level to normalise")
    return audio * (10.0 ** (target_db / 20.0) / rms)


# K-weighting of ITU-R BS.1770-4 as two biquads designed from analog parameters, as libebur128 does,
# so that at 48 kHz they reproduce the standard's published coefficients: a high shelf (+4 dB above
# ~1.7 kHz, the head's acoustic effect) and a ~38 Hz high-pass (the RLB weighting).
_K_SHELF = {"gain_db": 3.999843853973347, "q": 0.7071752369554196, "fc": 1681.974450955533}
_K_HIGHPASS = {"q": 0.5003270373238773, "fc": 38.13547087602444}
_BS1770_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def k_weighting_coefficients(sample_rate: int) -> list[tuple[list[float], list[float]]]:
    """``[(b, a) shelf, (b, a) high-pass]`` of the BS.1770 K-weighting filter at ``sample_rate`` Hz."""
    k = math.tan(math.pi * _K_SHELF["fc"] / sample_rate)
    q = _K_SHELF["q"]
    vh = 10 ** (_K_SHELF["gain_db"] / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = ([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0],
             [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    k = math.tan(math.pi * _K_HIGHPASS["fc"] / sample_rate)
    q = _K_HIGHPASS["q"]
    a0 = 1 + k / q + k * k
    highpass = ([1.0, -2.0, 1.0], [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return [shelf, highpass]


def loudness(audio: Tensor, sample_rate: int) -> Tensor:
    """Integrated loudness in LUFS of ``audio [..., C, T]`` (C <= 5: L, R, C, Ls, Rs) -> ``[...]``.

    ITU-R BS.1770-4: K-weighting, mean square over 400 ms blocks with 75 % overlap, channel weights
    (1, 1, 1, 1.41, 1.41), an absolute gate at -70 LUFS and a relative gate 10 LU below the
    absolutely-gated loudness. Computed in float64. (``torchaudio.functional.loudness`` approximates the
    K-filter and clamps the filtered signal to [-1, 1], which under-reads loud material, so it is not
    used.) Needs >= 0.4 s of audio; silent input gives -inf or NaN.
    """
    _check_audio(audio)
    if audio.shape[-2] > 5:
        raise ValueError(f"BS.1770 loudness is defined for up to 5 channels, got {audio.shape[-2]}")
    block = round(0.4 * sample_rate)
    if audio.shape[-1] < block:
        raise ValueError(f"loudness needs at least 0.4 s of audio (one BS.1770 block), got "
                         f"{audio.shape[-1] / sample_rate:.3f} s")
    import torchaudio.functional as AF

    x = audio.to(torch.float64)
    for b, a in k_weighting_coefficients(int(sample_rate)):
        x = AF.lfilter(x, torch.tensor(a, dtype=x.dtype, device=x.device),
                       torch.tensor(b, dtype=x.dtype, device=x.device), clamp=False)
    z = x.square().unfold(-1, block, round(block * 0.25)).mean(-1)  # [..., C, J]
    g = torch.tensor(_BS1770_CHANNEL_WEIGHTS[: z.shape[-2]], dtype=z.dtype, device=z.device)[:, None]
    block_lufs = -0.691 + 10 * torch.log10((g * z).sum(-2))  # [..., J]

    def gated(keep: Tensor) -> Tensor:
        mean_z = (z * keep[..., None, :]).sum(-1) / keep.sum(-1, keepdim=True)
        return -0.691 + 10 * torch.log10((g[:, 0] * mean_z).sum(-1))

    keep = block_lufs > -70.0
    rel = gated(keep) - 10.0
    return gated(keep & (block_lufs > rel[..., None])).to(audio.dtype)


def loudness_normalize(audio: Tensor, sample_rate: int, target_lufs: float = -23.0) -> Tensor:
    """Scale ``audio [..., C, T]`` to an integrated loudness of ``target_lufs`` (:func:`loudness`, BS.1770-4).

    -23 LUFS is EBU R 128's broadcast target. Raises for signals whose loudness is undefined (silence
    below the -70 LUFS absolute gate).
    """
    lufs = loudness(audio, sample_rate)
    if not torch.isfinite(lufs).all():
        raise ValueError(f"loudness is undefined (got {lufs.tolist()} LUFS): the signal is silent "
                         "below the BS.1770 absolute gate of -70 LUFS")
    return _db_gain(audio, (target_lufs - lufs)[..., None, None])


def silence_bounds(audio: Tensor, top_db: float = 60.0, frame_length: int = 1024,
                   hop_length: int = 256) -> tuple[int, int]:
    """``(start, end)`` sample indices of the non-silent part of ``audio [C, T]``.

    A frame is silent when its RMS (mixed over channels) is more than ``top_db`` below the loudest
    frame's, as in ``librosa.effects.trim``. ``(0, 0)`` when everything is silent.
    """
    if audio.ndim != 2:
        raise ValueError(f"silence_bounds expects audio [C, T], got shape {tuple(audio.shape)}")
    _check_audio(audio)
    x = audio.pow(2).mean(dim=0)
    t = x.shape[-1]
    pad = frame_length // 2
    x = torch.nn.functional.pad(x[None, None], (pad, pad))[0, 0]
    energy = x.unfold(0, frame_length, hop_length).mean(dim=-1)
    ref = energy.max()
    if ref <= 0:
        return 0, 0
    loud = torch.nonzero(10 * torch.log10(energy.clamp_min(1e-20) / ref) > -top_db).flatten()
    start = max(0, int(loud[0]) * hop_length)
    end = min(t, (int(loud[-1]) + 1) * hop_length)
    return start, end


def trim_silence(audio: Tensor, top_db: float = 60.0, frame_length: int = 1024,
                 hop_length: int = 256) -> Tensor:
    """Remove leading and trailing silence from ``audio [C, T]`` (see :func:`silence_bounds`).

    Resolution is one hop (``hop_length`` samples). Raises if the whole signal is silent.
    """
    start, end = silence_bounds(audio, top_db, frame_length, hop_length)
    if end <= start:
        raise ValueError("trim_silence got an all-silent signal; nothing would remain")
    return audio[:, start:end]
