"""Helpers of the corpus tests: source requirements, synthetic sample packs, file-tree digests.

Tests that simulate a machine (a missing source, an engine with only some voices, a pack of very short
samples) point the detection tables of :mod:`sonodiff.data.corpus.sources` at temporary folders with
``monkeypatch`` (:func:`point_packs`), so they do not depend on which optional packages are installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonodiff.data.corpus import sources as S
from sonodiff.data.corpus.sources import SOURCES, detect

# the sources CI installs (apt: scripts/apt-packages.txt); piper and music21 come with the corpus extra
CI_SOURCES = ("espeak-ng", "flite", "festival", "fluidsynth", "sonic-pi-samples", "sound-icons",
              "sound-theme-freedesktop")
TINY = 3  # clips per domain of the fast builds


def require_sources(names=CI_SOURCES) -> dict[str, bool]:
    """Skip (naming the packages) when a source the test needs is genuinely absent on this machine."""
    present = detect()
    missing = [n for n in names if not present[n]]
    if missing:
        pkgs = sorted({p for n in missing for p in SOURCES[n].apt + SOURCES[n].pip})
        pytest.skip(f"corpus sources not installed here: {missing} (install: {' '.join(pkgs)})")
    return present


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` except temporary files."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".tmp"):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_one_shot(path: Path, sound_s: float, sr: int = 44100, kind: str = "noise", channels: int = 1,
                   seed: int = 0, total_s: float | None = None) -> Path:
    """Write a synthetic sample: ``sound_s`` seconds of sound (noise or a 220 Hz tone at about -12 dBFS, 2 ms
    fades) followed by digital silence up to ``total_s`` (default: no tail). ``kind="zeros"``: all zeros."""
    n, total = round(sound_s * sr), round((total_s or sound_s) * sr)
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        x = np.zeros(n)
    elif kind == "tone":
        x = 0.35 * np.sin(2 * np.pi * 220 * np.arange(n) / sr)
    else:
        x = 0.25 * rng.standard_normal(n).clip(-3, 3)
    k = min(n // 2, round(0.002 * sr))
    if k:
        ramp = np.linspace(0.0, 1.0, k)
        x[:k] *= ramp
        x[n - k:] *= ramp[::-1]
    x = np.pad(x, (0, max(0, total - n)))
    data = np.repeat(x[:, None], channels, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


# a pack of very short one-shots, named so that sfx.LABEL_RULES labels them (lmms-common layout):
# relative path -> (seconds of sound, kind, sample rate, channels)
SHORT_PACK: dict[str, tuple[float, str, int, int]] = {
    "drums/shaker01.wav": (0.03, "noise", 44100, 1),     # the user's case: rejected, too short
    "misc/metronome01.wav": (0.05, "tone", 22050, 1),    # rejected, too short
    "drums/kick01.wav": (0.12, "tone", 44100, 1),        # repeated 14 times
    "drums/hihat01.wav": (0.15, "noise", 48000, 2),      # stereo, repeated
    "drums/snare01.wav": (0.2, "noise", 44100, 1),
    "drums/clap01.wav": (0.3, "noise", 16000, 1),
    "drums/tom01.wav": (0.6, "tone", 44100, 1),
    "misc/applause01.wav": (2.5, "noise", 44100, 2),     # long enough: used as it is
}


def make_pack(root: Path, spec: dict[str, tuple[float, str, int, int]] = SHORT_PACK) -> Path:
    """Write the files of ``spec`` under ``root`` (see :data:`SHORT_PACK`); returns ``root``."""
    for i, (rel, (secs, kind, sr, ch)) in enumerate(sorted(spec.items())):
        write_one_shot(root / rel, secs, sr=sr, kind=kind, channels=ch, seed=i)
    return root


def point_packs(monkeypatch, packs: dict[str, Path], soundfonts: tuple = ()) -> None:
    """Detect exactly ``packs`` (pack source -> folder) as sample packs and ``soundfonts`` as the soundfonts,
    whatever is installed here (no soundfont: no GM effects, so sfx builds need no Debian package)."""
    monkeypatch.setattr(S, "SAMPLE_DIRS", {k: str(v) for k, v in packs.items()})
    monkeypatch.setattr(S, "SOUNDFONTS", tuple(soundfonts))


def frame_silence(x: np.ndarray, sr: int) -> float:
    """The acceptance rule's silence measure, written out again here so the test does not trust content.py:
    share of 20 ms frames whose RMS is 40 dB or more below the loudest frame's, or under -60 dBFS."""
    n = round(0.02 * sr)
    frames = [x[i:i + n] for i in range(0, len(x), n)]
    db = np.array([10 * np.log10(np.mean(f.astype(np.float64) ** 2) + 1e-20) for f in frames])
    return float(np.mean(db < max(db.max() - 40, -60)))


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def fake_inventory(n_samples: int = 60, music21: bool = False) -> S.Inventory:
    """An inventory of a fully equipped machine, made up (no detection, no files): every catalogued voice,
    fluidsynth with a soundfont, ``n_samples`` recorded files spread over the label rules. For plan tests."""
    from sonodiff.data.corpus.sfx import LABEL_RULES
    from sonodiff.data.corpus.speech import catalogue

    items = [S.Item(v.source, "voice", v.name, "present") for v in catalogue()]
    items += [S.Item("fluidsynth", "program", "fluidsynth", "present"),
              S.Item("fluidsynth", "soundfont", "/fake/TimGM6mb.sf2", "present"),
              S.Item("music21", "module", "music21", "present" if music21 else "missing", "" if music21 else "test")]
    for i in range(n_samples):
        _, label, desc = LABEL_RULES[i % len(LABEL_RULES)]
        items.append(S.Item("sound-icons", "sample", f"/fake/pack/{i:03d}.wav", "present", label=label,
                            description=desc, repeats=1 + i % 4))
    return S.Inventory(tuple(items))
