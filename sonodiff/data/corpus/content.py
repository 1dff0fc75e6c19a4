"""What a corpus clip must contain: the silence measure, the acceptance rule, the recorded-sample rule.

**Silence** is measured per frame: a clip is cut into non-overlapping 20 ms frames (``FRAME_S``; the
last, shorter frame counts as one), each frame's RMS in dBFS is taken, and a frame is *silent* when it is
``SILENCE_BELOW_PEAK_DB`` (40 dB) or more below the loudest frame, or under ``SILENCE_FLOOR_DBFS``
(-60 dBFS) absolute. The silence fraction is the share of silent frames.

**Acceptance rule** (every clip the builder writes, checked after the last processing step; a clip that
fails it is an error naming the clip, never a silent fix): RMS over the whole clip at least
``MIN_RMS_DBFS`` (-40 dBFS) and a silence fraction at most ``MAX_SILENCE_FRACTION`` (0.8).

**Recorded-sample rule** (each file of a sample pack, checked before a build by
:func:`check_recorded`, so a file that cannot make a good clip is left out of the plan and listed with
its reason in CORPUS.md). Sound = the frames within 40 dB of the file's loudest frame:

1. the file must be readable, not empty, and its loudest frame at least -60 dBFS;
2. it must hold at least ``MIN_SOUND_S`` (0.1 s) of sound (a 0.03 s one-shot is rejected, not padded);
3. a file with less than ``REPEAT_FILL`` (0.4) x the clip length of sound is a one-shot: its sounding
   span (first to last sounding frame) is repeated ``k`` times at evenly spaced onsets so that the
   copies hold about 0.4 x the clip length of sound, with ``k`` at most one copy per ``MIN_PERIOD_S``
   (0.25 s) and copies never overlapping; ``k`` is recorded (``repeats``) and the caption says
   "repeated k times". Longer files are used as they are (trimmed to the clip length);
4. the clip made from it (repeated, fitted to the clip length, loudness-normalised, before augmentation)
   must have a silence fraction at most ``SOURCE_MAX_SILENCE_FRACTION`` (0.7) and an RMS of at least
   ``SOURCE_MIN_RMS_DBFS`` (-36 dBFS): a margin over the acceptance rule for what augmentation changes
   (speeding up by 1.25 leaves 20 % of the clip as padding).

**Gain augmentation** lowers a normalised clip by its drawn ``gain_db`` but never below
``GAIN_FLOOR_DBFS`` (-38 dBFS RMS over the whole clip); the gain actually applied is recorded.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "FRAME_S",
    "GAIN_FLOOR_DBFS",
    "MAX_SILENCE_FRACTION",
    "MIN_PERIOD_S",
    "MIN_RMS_DBFS",
    "MIN_SOUND_S",
    "PEAK_LIMIT",
    "REPEAT_FILL",
    "SILENCE_BELOW_PEAK_DB",
    "SILENCE_FLOOR_DBFS",
    "SOURCE_MAX_SILENCE_FRACTION",
    "SOURCE_MIN_RMS_DBFS",
    "TARGET_LUFS",
    "acceptance_problems",
    "check_recorded",
    "fit_length",
    "frame_db",
    "gain_within_floor",
    "normalise",
    "repeat_to_fill",
    "rms_dbfs",
    "silence_fraction",
]

FRAME_S = 0.02
SILENCE_BELOW_PEAK_DB = 40.0
SILENCE_FLOOR_DBFS = -60.0
MIN_RMS_DBFS = -40.0
MAX_SILENCE_FRACTION = 0.8
MIN_SOUND_S = 0.1
REPEAT_FILL = 0.4
MIN_PERIOD_S = 0.25
SOURCE_MAX_SILENCE_FRACTION = 0.7
SOURCE_MIN_RMS_DBFS = -36.0
GAIN_FLOOR_DBFS = -38.0
TARGET_LUFS = -23.0  # EBU R 128
PEAK_LIMIT = 0.891  # -1 dBFS: clips whose peak would exceed it at TARGET_LUFS are turned down instead
_FADE_S = 0.005  # fade-out at the end of a repeated span, so a copy never ends in a click


def frame_db(x: np.ndarray, sr: int) -> np.ndarray:
    """RMS in dBFS of each 20 ms frame of ``x [T]`` (the last frame may be shorter) -> ``[F]``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"frame_db expects a non-empty mono signal [T], got shape {x.shape}")
    n = max(1, round(FRAME_S * sr))
    k = -(-x.size // n)
    y = np.zeros(k * n)
    y[: x.size] = x
    counts = np.minimum(n, x.size - np.arange(k) * n)
    return 10 * np.log10((y.reshape(k, n) ** 2).sum(axis=1) / counts + 1e-20)


def _silent(db: np.ndarray) -> np.ndarray:
    return db < max(float(db.max()) - SILENCE_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)


def silence_fraction(x: np.ndarray, sr: int) -> float:
    """Share of silent frames of ``x [T]`` (see the module docstring); 1.0 for digital silence."""
    return float(np.mean(_silent(frame_db(x, sr))))


def rms_dbfs(x: np.ndarray) -> float:
    """RMS of ``x [T]`` over its whole length, in dBFS (-200 for digital silence)."""
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(x ** 2) + 1e-20))


def acceptance_problems(x: np.ndarray, sr: int) -> list[str]:
    """How the clip ``x [T]`` breaks the acceptance rule (empty list when it passes)."""
    out = []
    r, s = rms_dbfs(x), silence_fraction(x, sr)
    if r < MIN_RMS_DBFS:
        out.append(f"RMS {r:.1f} dBFS over the whole clip is under the {MIN_RMS_DBFS:.0f} dBFS floor")
    if s > MAX_SILENCE_FRACTION:
        out.append(f"{100 * s:.0f} % of its 20 ms frames are silent (at most {100 * MAX_SILENCE_FRACTION:.0f} % "
                   f"allowed; silent = {SILENCE_BELOW_PEAK_DB:.0f} dB below the loudest frame or under "
                   f"{SILENCE_FLOOR_DBFS:.0f} dBFS)")
    return out


def _sounding(x: np.ndarray, sr: int) -> tuple[np.ndarray, int, float]:
    """``(mask [F], frame length, seconds of sound)``: the frames within 40 dB of the loudest one
    (relative only: a quiet file is loudness-normalised later)."""
    db = frame_db(x, sr)
    n = max(1, round(FRAME_S * sr))
    snd = db >= float(db.max()) - SILENCE_BELOW_PEAK_DB
    counts = np.minimum(n, x.size - np.arange(snd.size) * n)
    return snd, n, float(counts[snd].sum()) / sr


def repeat_to_fill(x: np.ndarray, sr: int, seconds: float) -> tuple[np.ndarray, int]:
    """``(audio, repeats)``: ``x [T]`` as is (``repeats`` 1) when it holds at least REPEAT_FILL x ``seconds``
    of sound, else its sounding span repeated (rule 3 of the module docstring) into ``seconds`` s."""
    x = np.asarray(x, dtype=np.float32)
    snd, n, sound_s = _sounding(x, sr)
    if sound_s >= REPEAT_FILL * seconds:
        return x, 1
    idx = np.nonzero(snd)[0]
    seg = x[idx[0] * n: min(x.size, (idx[-1] + 1) * n)].copy()
    k_fade = min(seg.size, round(_FADE_S * sr))
    seg[seg.size - k_fade:] *= np.linspace(1.0, 0.0, k_fade, dtype=np.float32)
    span_s = seg.size / sr
    # (1e-9: 1.6 / 0.1 is 16.000000000000004 in floating point, which must give 16 copies, not 17)
    k = min(math.ceil(REPEAT_FILL * seconds / max(sound_s, 1e-9) - 1e-9),
            math.floor(seconds / max(span_s, MIN_PERIOD_S) + 1e-9))
    k = max(k, 1)
    total = round(seconds * sr)
    period = total // k
    out = np.zeros(total, dtype=np.float32)
    for i in range(k):
        s = i * period
        m = min(seg.size, total - s)
        out[s: s + m] += seg[:m]
    return out, k


def fit_length(audio: np.ndarray, n: int, sr: int) -> tuple[np.ndarray, str]:
    """Trim (with a 10 ms fade-out) or zero-pad ``audio [T]`` to ``n`` samples; also says which."""
    if len(audio) > n:
        out = audio[:n].copy()
        k = min(n, int(0.01 * sr))
        out[n - k:] *= np.linspace(1.0, 0.0, k, dtype=out.dtype)
        return out, "trimmed"
    if len(audio) < n:
        return np.pad(audio, (0, n - len(audio))), "padded"
    return audio, "exact"


def normalise(x: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Loudness-normalise ``x [T]`` to TARGET_LUFS (ITU-R BS.1770-4), turned down if its peak would
    exceed PEAK_LIMIT; returns the float32 audio and its measured loudness in LUFS (rounded to 0.01)."""
    import torch

    from sonodiff.audio.io import loudness

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    lufs = float(loudness(t, sr))
    if not np.isfinite(lufs):
        raise RuntimeError(f"the clip is silent (loudness {lufs} LUFS)")
    y = x * 10 ** ((TARGET_LUFS - lufs) / 20)
    peak = float(np.abs(y).max())
    if peak > PEAK_LIMIT:
        y = y * (PEAK_LIMIT / peak)
    y = y.astype(np.float32)
    return y, round(float(loudness(torch.from_numpy(y)[None], sr)), 2)


def gain_within_floor(x: np.ndarray, gain_db: float) -> float:
    """The gain (dB, <= 0) to apply to ``x [T]`` for a drawn ``gain_db`` <= 0: ``gain_db``, or less
    attenuation where the clip would fall under GAIN_FLOOR_DBFS RMS (0 when it already is); 0.01 dB steps."""
    if gain_db > 0:
        raise ValueError(f"gain augmentation only turns clips down, got gain_db={gain_db}")
    room = GAIN_FLOOR_DBFS - rms_dbfs(x)  # <= 0 when the clip is above the floor
    return min(0.0, round(max(gain_db, math.ceil(room * 100) / 100), 2))


def check_recorded(x: np.ndarray, sr: int, seconds: float) -> tuple[str, int]:
    """``(reason, repeats)`` for a recorded file's mono audio ``x [T]`` at ``sr`` Hz made into a clip of
    ``seconds``: ``reason`` is empty when the file passes the recorded-sample rule, else says why not."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return "empty file (no samples)", 0
    if not np.all(np.isfinite(x)):
        return "holds NaN or infinite samples", 0
    db = frame_db(x, sr)
    if db.max() < SILENCE_FLOOR_DBFS:
        return f"silent (loudest 20 ms frame {db.max():.0f} dBFS, under {SILENCE_FLOOR_DBFS:.0f} dBFS)", 0
    _, _, sound_s = _sounding(x, sr)
    if sound_s < MIN_SOUND_S:
        return (f"too short: {sound_s:.2f} s of sound (20 ms frames within {SILENCE_BELOW_PEAK_DB:.0f} dB of the "
                f"loudest) in {x.size / sr:.2f} s; at least {MIN_SOUND_S} s needed"), 0
    y, k = repeat_to_fill(x, sr, seconds)
    y, _ = fit_length(y, round(seconds * sr), sr)
    if y.size < round(0.4 * sr):
        return f"clip of {seconds} s too short to measure its loudness (BS.1770 needs 0.4 s)", k
    # the level normalise() would give, without making the audio (one loudness measurement per file)
    import torch

    from sonodiff.audio.io import loudness

    lufs = float(loudness(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None], sr))
    if not np.isfinite(lufs):
        return f"silent once fitted to {seconds} s (loudness {lufs} LUFS)", k
    gain_db = min(TARGET_LUFS - lufs, 20 * np.log10(PEAK_LIMIT / float(np.abs(y).max())))
    rep = f" (repeated {k} times)" if k > 1 else ""
    s = float(np.mean(_silent(frame_db(y, sr) + gain_db)))
    if s > SOURCE_MAX_SILENCE_FRACTION:
        return (f"mostly silence: its {seconds} s clip{rep} would be {100 * s:.0f} % silent frames (at most "
                f"{100 * SOURCE_MAX_SILENCE_FRACTION:.0f} % allowed before augmentation)"), k
    r = rms_dbfs(y) + gain_db
    if r < SOURCE_MIN_RMS_DBFS:
        return (f"too quiet once normalised: its {seconds} s clip{rep} would have an RMS of {r:.1f} dBFS (at "
                f"least {SOURCE_MIN_RMS_DBFS:.0f} dBFS needed before augmentation)"), k
    return "", k
