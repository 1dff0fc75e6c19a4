"""Bad-audio detection: every file is read through :func:`read_checked`, which returns the audio or
raises :class:`BadAudio` with a reason code and a detail. Reasons (:data:`REASONS`):

- ``zero_length``: a 0-byte file, or a valid header with no samples.
- ``unreadable``: libsndfile cannot open it (not audio, unknown format, broken header).
- ``truncated``: the header promises more data than the file holds (WAV data chunk or frame count).
- ``corrupt``: it opens but decoding fails part-way (e.g. a FLAC stream that loses sync).
- ``non_finite``: NaN or inf samples (float WAV).
- ``silent``: the peak is below ``silence_db`` dBFS.
- ``clipped``: more than ``clip_fraction`` of the samples sit at or above ``clip_level`` (full scale).
- ``too_short``: shorter than ``min_duration_s``, or too short for the codec's analysis window.
Dataset-level reasons come from scanning: ``missing_file``, ``missing_caption``, ``bad_metadata``.
Image files (an image codec's data set) add ``not_image`` (e.g. a .wav listed for an image model),
``wrong_channels`` and ``wrong_size`` (the codec's fixed channels or size differ).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_CHECK", "REASONS", "BadAudio", "CheckConfig", "read_checked", "wav_truncation"]

REASONS = ("zero_length", "unreadable", "truncated", "corrupt", "non_finite", "silent", "clipped", "too_short",
           "missing_file", "missing_caption", "bad_metadata", "error",
           # image files (sonodiff.audio.image_io.read_image)
           "not_image", "wrong_channels", "wrong_size")


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds: ``silence_db`` dBFS peak below which a file is silent; ``clip_level`` (fraction of full
    scale) and ``clip_fraction`` (of samples) for badly clipped; ``min_duration_s`` seconds."""

    silence_db: float = -60.0
    clip_level: float = 0.999
    clip_fraction: float = 0.01
    min_duration_s: float = 0.0


DEFAULT_CHECK = CheckConfig()


class BadAudio(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def wav_truncation(path: str | os.PathLike) -> str | None:
    """For a RIFF/WAVE file, a message if the ``data`` chunk declares more bytes than the file holds."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                available = size - pos - 8
                if csize not in (0, 0xFFFFFFFF) and csize > available:
                    return f"data chunk declares {csize} bytes, file holds {available}"
                return None
            pos += 8 + csize + (csize & 1)
    return None


def read_checked(path: str | os.PathLike, check: CheckConfig = DEFAULT_CHECK) -> tuple[Tensor, int]:
    """Read ``path`` as float32 ``[C, T]`` with its sample rate, or raise :class:`BadAudio`."""
    import soundfile as sf

    path = Path(path)
    if os.path.getsize(path) == 0:
        raise BadAudio("zero_length", "file is 0 bytes")
    if path.suffix.lower() == ".wav":
        msg = wav_truncation(path)
        if msg:
            raise BadAudio("truncated", msg)
    try:
        f = sf.SoundFile(str(path))
    except (RuntimeError, OSError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise BadAudio("unreadable", str(e).replace(str(path), path.name)) from None
    with f:
        if f.frames == 0:
            raise BadAudio("zero_length", "header is valid but holds 0 samples")
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise BadAudio("corrupt", f"decoding failed: {str(e).replace(str(path), path.name)}") from None
        sr, frames = f.samplerate, f.frames
    if frames > 0 and data.shape[0] < frames and path.suffix.lower() != ".mp3":
        raise BadAudio("truncated", f"header promises {frames} frames, decoded {data.shape[0]}")
    if data.shape[0] == 0:
        raise BadAudio("zero_length", "decoded 0 samples")
    if not np.isfinite(data).all():
        raise BadAudio("non_finite", f"{int((~np.isfinite(data)).sum())} NaN/inf samples")
    duration = data.shape[0] / sr
    if duration < check.min_duration_s:
        raise BadAudio("too_short", f"{duration:.3f} s < min_duration_s={check.min_duration_s}")
    mag = np.abs(data)
    peak = float(mag.max())
    if peak <= 10 ** (check.silence_db / 20):
        peak_db = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise BadAudio("silent", f"peak {peak_db:.1f} dBFS <= silence_db={check.silence_db}")
    clipped = float((mag >= check.clip_level).mean())
    if clipped > check.clip_fraction:
        raise BadAudio("clipped", f"{100 * clipped:.2f}% of samples at >= {check.clip_level} of full scale "
                                  f"(limit {100 * check.clip_fraction:.2f}%)")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)
