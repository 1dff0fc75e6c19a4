"""Fixture audio written by the tests themselves (soundfile), offered as fixtures (``make_tone``, ``bad_files``)."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def tone_array(f=440.0, sr=16000, seconds=0.5, amp=0.3, channels=1, noise=0.0, seed=0):
    t = np.arange(round(sr * seconds)) / sr
    x = amp * np.sin(2 * math.pi * f * t)
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(len(t))
    return np.stack([x] * channels, axis=1).astype(np.float32)


def write_tone(path, f=440.0, sr=16000, seconds=0.5, amp=0.3, channels=1, noise=0.0, seed=0, subtype=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone_array(f, sr, seconds, amp, channels, noise, seed), sr, subtype=subtype)
    return path


@pytest.fixture
def make_tone():
    return write_tone


def make_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of every bad kind into ``folder``; returns {relative path: expected reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_tone(folder / "tmp_good.wav", seconds=1.0)
    data = good.read_bytes()
    good.unlink()
    (folder / "zero.wav").write_bytes(b"")
    sf.write(str(folder / "empty.wav"), np.zeros((0, 1), np.float32), 16000)
    (folder / "garbage.wav").write_bytes(b"this is not a riff file at all" * 10)
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    write_tone(folder / "tmp.flac", seconds=1.0, noise=0.05)
    fl = (folder / "tmp.flac").read_bytes()
    (folder / "tmp.flac").unlink()
    (folder / "corrupt.flac").write_bytes(fl[: len(fl) // 2])
    sf.write(str(folder / "silent.wav"), np.zeros((8000, 1), np.float32), 16000)
    x = tone_array(seconds=0.5)
    x[100:110] = np.nan
    sf.write(str(folder / "nan.wav"), x, 16000, subtype="FLOAT")
    sf.write(str(folder / "clipped.wav"), np.clip(tone_array(seconds=0.5, amp=3.0), -1, 1), 16000)
    return {"zero.wav": "zero_length", "empty.wav": "zero_length", "garbage.wav": "unreadable",
            "truncated.wav": "truncated", "corrupt.flac": "corrupt", "silent.wav": "silent", "nan.wav": "non_finite",
            "clipped.wav": "clipped"}


@pytest.fixture
def bad_files():
    return make_bad_files
