"""Music clips: General MIDI renders (fluidsynth) of real score excerpts and generated parts.

(a) excerpts of music21's bundled scores (Bach chorales, tunes of Ryan's Mammoth Collection) with an
assigned instrument and tempo; (b) generated melodies, arpeggios, chord progressions and drum
patterns. Every note is known, so captions and the verification (basic-pitch note F1, tempo) are exact.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from sonodiff.data.corpus.midi import GM_DRUMS, GM_PROGRAMS, Part, write_midi

__all__ = [
    "CHORD_INSTRUMENTS",
    "DRUM_REVERB",
    "DRUM_STYLES",
    "ENSEMBLES",
    "KEYS",
    "MELODY_DURATIONS",
    "MELODY_INSTRUMENTS",
    "TEMPO_CLASSES",
    "generate_parts",
    "render_midi",
    "score_catalogue",
    "score_parts",
]

KEYS: tuple[str, ...] = ("C", "D flat", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B")
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
TEMPO_CLASSES: dict[str, tuple[int, ...]] = {"slow": (60, 66, 70, 76), "moderate": (84, 92, 100, 108, 116),
                                             "fast": (124, 132, 140, 150)}
REGISTERS = {"low": 40, "middle": 55, "high": 72}  # MIDI pitch of the lowest tonic in the register
# instrument -> registers it plays in
MELODY_INSTRUMENTS: dict[str, tuple[str, ...]] = {
    "piano": ("low", "middle", "high"), "violin": ("middle", "high"), "cello": ("low", "middle"),
    "flute": ("middle", "high"), "clarinet": ("middle",), "oboe": ("middle", "high"), "trumpet": ("middle",),
    "alto sax": ("middle",), "french horn": ("low", "middle"), "nylon guitar": ("low", "middle"),
    "marimba": ("middle", "high"), "vibraphone": ("middle", "high"), "harp": ("middle", "high"),
    "accordion": ("middle",), "bassoon": ("low",), "contrabass": ("low",), "music box": ("high",),
    "square lead": ("middle", "high"), "sitar": ("middle",), "pan flute": ("middle", "high"),
    "xylophone": ("high",), "trombone": ("low", "middle"), "fiddle": ("middle", "high"), "kalimba": ("middle",),
}
CHORD_INSTRUMENTS: tuple[str, ...] = ("piano", "electric piano", "church organ", "nylon guitar", "steel guitar",
                                      "string ensemble", "harp", "warm pad", "accordion", "brass section",
                                      "choir", "harpsichord", "vibraphone", "marimba")
ENSEMBLES: tuple[str, ...] = ("string ensemble", "church organ", "piano", "brass section", "choir", "harpsichord")
FOLK_INSTRUMENTS: tuple[str, ...] = ("fiddle", "flute", "violin", "accordion", "piano", "recorder", "bagpipe",
                                     "harmonica", "banjo", "oboe", "clarinet", "pan flute")
# 16-step patterns per instrument (x = hit); waltz uses 12 steps (3/4 in sixteenths)
DRUM_STYLES: dict[str, dict[str, str]] = {
    "rock": {"kick": "x.......x.x.....", "snare": "....x.......x...", "closed hihat": "x.x.x.x.x.x.x.x."},
    "house": {"kick": "x...x...x...x...", "clap": "....x.......x...", "open hihat": "..x...x...x...x."},
    "hip hop": {"kick": "x......x..x.....", "snare": "....x.......x...", "closed hihat": "x.xxx.x.x.xxx.x."},
    "funk": {"kick": "x..x..x...x..x..", "snare": "....x..x.x..x...", "closed hihat": "xxxxxxxxxxxxxxxx"},
    "waltz": {"kick": "x...........", "snare": "....x...x...", "ride": "x...x...x..."},
    "latin": {"kick": "x..x..x.x..x..x.", "claves": "x..x..x...x.x...", "high conga": "..x...x...x..xx."},
}
# reverb send (MIDI controller 91) of the drum kit: a room around the kit, so a slow, sparse pattern is not
# mostly silence between dry hits (rock at 60 bpm: 84 % silent 20 ms frames dry, 68 % with this send;
# TimGM6mb, content.py's measure)
DRUM_REVERB = 64
# note values (beats) of generated melodies; instruments whose notes die away fast get shorter ones, so a
# slow melody is not mostly silence (xylophone at 60 bpm: up to 84 % silent frames with the default values,
# 47 % with these; marimba 62 % -> 38 %; TimGM6mb, 30 melodies each)
MELODY_DURATIONS: dict[str, tuple[float, ...]] = {"default": (0.5, 1.0, 1.0, 1.0, 2.0),
                                                  "xylophone": (0.25, 0.5, 0.5), "marimba": (0.5, 0.5, 1.0)}
_PROGRESSIONS = {"major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),
                 "minor": ((0, 3, 4, 0), (0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 4))}


def _degree_pitch(tonic: int, mode: str, degree: int) -> int:
    sc = MODES[mode]
    return tonic + 12 * (degree // 7) + sc[degree % 7]


def _triad(tonic: int, mode: str, root: int) -> list[int]:
    return [_degree_pitch(tonic, mode, root + k) for k in (0, 2, 4)]


def generate_parts(f: dict, seconds: float, rng: np.random.Generator) -> list[Part]:
    """Parts for a generated clip from fields ``kind, instrument, tempo, key, mode, register, style``."""
    beats = max(2, int((seconds - 0.4) * f["tempo"] / 60.0))
    kind = f["kind"]
    if kind == "drums":
        pat = DRUM_STYLES[f["style"]]
        steps = len(next(iter(pat.values())))
        notes = {name: [] for name in pat}
        for s in range(beats * 4):
            for name, p in pat.items():
                if p[s % steps] == "x":
                    vel = 100 if s % 4 == 0 else 80
                    notes[name].append((s / 4.0, 0.25, GM_DRUMS[name], vel))
        allnotes = tuple(sorted(n for v in notes.values() for n in v))
        return [Part(0, allnotes, drums=True, reverb=DRUM_REVERB)]
    tonic = REGISTERS[f["register"]] + KEYS.index(f["key"])
    mode, prog = f["mode"], GM_PROGRAMS[f["instrument"]]
    if kind == "melody":
        notes, t, deg = [], 0.0, 0
        durs = MELODY_DURATIONS.get(f["instrument"], MELODY_DURATIONS["default"])
        while t < beats - 0.01:
            d = min(durs[int(rng.integers(len(durs)))], beats - t)
            notes.append((t, d * 0.95, _degree_pitch(tonic, mode, deg), int(rng.integers(80, 110))))
            t += d
            deg = int(np.clip(deg + int(rng.choice([-2, -1, -1, 1, 1, 2, 3, -3, 0])), -2, 9))
        return [Part(prog, tuple(notes))]
    progs = _PROGRESSIONS[mode]
    roots = progs[int(rng.integers(len(progs)))]
    per = 4.0 if beats >= 8 else 2.0
    notes = []
    for i in range(int(np.ceil(beats / per))):
        triad = _triad(tonic, mode, roots[i % len(roots)])
        t0 = i * per
        if kind == "chords":
            for p in [triad[0] - 12] + triad:
                notes.append((t0, min(per, beats - t0) * 0.95, p, 85))
        elif kind == "arpeggio":
            seq = triad + [triad[0] + 12, triad[2], triad[1]]
            for k in range(int(per * 2)):
                if t0 + k * 0.5 < beats:
                    notes.append((t0 + k * 0.5, 0.45, seq[k % len(seq)], 90 if k % 2 == 0 else 75))
        else:
            raise ValueError(f"unknown music kind {kind!r}; valid: melody, arpeggio, chords, drums, score")
    return [Part(prog, tuple(notes))]


def score_catalogue() -> dict[str, list[str]]:
    """``{"chorale": [corpus paths], "folk": [...]}`` of music21's bundled scores, sorted."""
    from music21 import corpus

    root = "corpus/"
    chorales = sorted(str(p).split(root)[-1] for p in corpus.getComposer("bach")
                      if Path(p).name.startswith("bwv") and str(p).endswith((".mxl", ".xml", ".krn")))
    folk = sorted(str(p).split(root)[-1] for p in corpus.getComposer("ryansMammoth"))
    return {"chorale": chorales, "folk": folk}


def _folk_kind(path: str) -> str:
    name = Path(path).stem.lower()
    for k in ("reel", "jig", "hornpipe", "strathspey", "waltz", "polka", "march", "air", "schottische"):
        if name.endswith(k):
            return k
    return "tune"


def score_parts(f: dict, seconds: float) -> tuple[list[Part], dict]:
    """Parts for a score excerpt (fields ``source_score, start_measure, instrument, tempo``) and the
    analysed ``{"key", "mode", "title"}``. Parsing is by music21; every part gets the assigned instrument."""
    from music21 import corpus

    score = corpus.parse(f["source_score"])
    beats = (seconds - 0.3) * f["tempo"] / 60.0
    parts = score.parts if len(score.parts) else [score]
    measures = list(parts[0].getElementsByClass("Measure"))
    start = float(measures[min(f["start_measure"], len(measures) - 1)].offset) if measures else 0.0
    prog = GM_PROGRAMS[f["instrument"]]
    out = []
    for part in parts:
        notes = []
        for n in part.flatten().notes:
            on = float(n.offset) - start
            if on < 0 or on >= beats:
                continue
            dur = min(float(n.quarterLength), beats - on)
            if dur <= 0:
                continue
            for p in n.pitches:
                notes.append((on, dur, int(p.midi), 90))
        if notes:
            out.append(Part(prog, tuple(sorted(notes))))
    if not out:
        raise RuntimeError(f"{f['source_score']} has no notes from measure {f['start_measure']}")
    k = score.analyze("key")
    tonic = k.tonic.name.replace("-", " flat").replace("#", " sharp")
    title = score.metadata.title if score.metadata is not None and score.metadata.title else Path(f["source_score"]).stem
    return out, {"key": tonic, "mode": k.mode, "title": str(title)}


def render_midi(midi: bytes, sample_rate: int, soundfont: str) -> np.ndarray:
    """Render Standard MIDI File bytes with fluidsynth -> mono float32 ``[T]`` at ``sample_rate`` Hz.

    32-bit float output (``-O float``) avoids fluidsynth's dither, so renders are bit-identical.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="sonodiff_midi_") as d:
        mid, wav = Path(d) / "in.mid", Path(d) / "out.wav"
        mid.write_bytes(midi)
        cmd = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(int(sample_rate)), "-O", "float",
               "-F", str(wav), soundfont, str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed (rc={res.returncode}): {res.stderr[-400:]}")
        data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate} Hz")
    return data.mean(axis=1)


def music_midi(f: dict, seconds: float, rng: np.random.Generator) -> tuple[bytes, dict, list[Part]]:
    """MIDI bytes, updated fields and parts for music fields ``f``."""
    if f["kind"] == "score":
        parts, info = score_parts(f, seconds)
        f = dict(f, key=info["key"], mode=info["mode"], title=info["title"])
    else:
        parts = generate_parts(f, seconds, rng)
    return write_midi(parts, f["tempo"]), f, parts


def folk_kind(path: str) -> str:
    """The tune type from a Ryan's Mammoth file name (reel, jig, hornpipe...), else ``tune``."""
    return _folk_kind(path)
