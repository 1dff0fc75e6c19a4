"""Sound-effect clips: recorded Debian samples, General MIDI effects, parametric sounds, augmentation.

Recorded samples get a label from their file name through :data:`LABEL_RULES` (the documented label
set; files that match no rule are not used) and must pass the recorded-sample rule of :mod:`.content`
(checked by :func:`sources.detect_items` before a build); one-shots are repeated to fill the clip and
the caption says so. Parametric sounds (sirens, sweeps, noise bursts, beeps)
are synthesised here from their parameters, which are recorded. Augmentation parameters are drawn
in the plan (from the build seed) and applied here, separately, as in audiotools.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np

from sonodiff.data.corpus.midi import Part, write_midi

__all__ = [
    "AUGMENTATIONS",
    "GM_EFFECTS",
    "LABEL_RULES",
    "PARAMETRIC",
    "augment",
    "draw_augmentation",
    "draw_parametric",
    "gm_notes",
    "label_of",
    "render_sfx",
]

# (regex on "<source>/<file path relative to the source folder>", label, caption description)
LABEL_RULES: tuple[tuple[str, str, str], ...] = (
    (r"sonic-pi-samples/(bd_|drum_heavy_kick|drum_bass_)", "kick drum", "kick drum hit"),
    (r"lmms-common/drums/(kick|bassdrum)", "kick drum", "kick drum hit"),
    (r"sonic-pi-samples/(sn_|drum_snare|elec_.*snare)", "snare drum", "snare drum hit"),
    (r"lmms-common/drums/snare", "snare drum", "snare drum hit"),
    (r"lmms-common/drums/hihat|sonic-pi-samples/drum_cymbal_(closed|pedal)", "hi-hat", "hi-hat"),
    (r"sonic-pi-samples/drum_(cymbal_(hard|open|soft)|splash)|lmms-common/drums/(crash|ride)|sonic-pi-samples/elec_cymbal",
     "cymbal", "cymbal crash"),
    (r"sonic-pi-samples/drum_tom|lmms-common/drums/tom", "tom drum", "tom drum hit"),
    (r"lmms-common/drums/clap", "hand clap", "hand clap"),
    (r"sonic-pi-samples/drum_cowbell", "cowbell", "cowbell"),
    (r"lmms-common/drums/shaker", "shaker", "shaker"),
    (r"lmms-common/drums/(rim|sidestick|snare_rim)", "rim shot", "rim shot"),
    (r"sonic-pi-samples/tabla_|sonic-pi-samples/loop_tabla", "tabla", "tabla drum"),
    (r"sonic-pi-samples/loop_(amen|breakbeat|compus|perc|safari|mika)|lmms-common/beats/", "drum loop", "drum loop"),
    (r"sonic-pi-samples/(bass_|glitch_bass)|lmms-common/(basses|bassloops)/", "synth bass", "synth bass line"),
    (r"sonic-pi-samples/elec_(beep|blip|blup|plip|ping|pop|tick|twip|flip|bong|twang)|sonic-pi-samples/glitch_perc",
     "electronic blip", "electronic blip"),
    (r"sonic-pi-samples/(elec_bell|perc_bell|elec_chime|elec_triangle)|freedesktop/bell|lmms-common/misc/(dong|metalish)",
     "bell", "bell ringing"),
    (r"lmms-common/effects/wind_chimes", "wind chimes", "wind chimes"),
    (r"sonic-pi-samples/(ambi_(dark_woosh|swoosh)|perc_swoosh|perc_swash)", "whoosh", "whoosh"),
    (r"sonic-pi-samples/ambi_(drone|haunted_hum|soft_buzz|lunar_land|sauna)|sonic-pi-samples/loop_drone",
     "drone", "low ambient drone"),
    (r"sonic-pi-samples/ambi_glass|sound-icons/glass-water", "glass", "ringing glass"),
    (r"sonic-pi-samples/vinyl_(scratch|backspin|rewind)|lmms-common/effects/scratch", "record scratch",
     "vinyl record scratch"),
    (r"sonic-pi-samples/vinyl_hiss", "vinyl hiss", "crackling vinyl hiss"),
    (r"sonic-pi-samples/(glitch_robot|mehackit_robot)", "robot", "robotic electronic voice"),
    (r"sonic-pi-samples/mehackit_phone|freedesktop/phone-", "phone", "telephone tone"),
    (r"sonic-pi-samples/misc_crow", "crow", "crow cawing"),
    (r"sound-icons/canary", "bird song", "canary singing"),
    (r"sonic-pi-samples/misc_burp", "burp", "burp"),
    (r"sonic-pi-samples/perc_door", "door", "door knock"),
    (r"sonic-pi-samples/(perc_impact|misc_cineboom)|lmms-common/misc/hit", "impact", "heavy impact"),
    (r"sonic-pi-samples/perc_snap|lmms-common/misc/snaph", "finger snap", "finger snap"),
    (r"sonic-pi-samples/perc_till", "cash register", "cash register"),
    (r"sonic-pi-samples/guit_|lmms-common/instruments/steel_guitar|sound-icons/guitar|lmms-common/latin/latin_guitar",
     "guitar", "guitar"),
    (r"lmms-common/misc/applause", "applause", "applause"),
    (r"lmms-common/misc/raving_crowd", "crowd", "cheering crowd"),
    (r"lmms-common/misc/breath", "breath", "breathing"),
    (r"lmms-common/misc/metronome", "metronome", "metronome ticking"),
    (r"lmms-common/effects/explode", "explosion", "explosion"),
    (r"lmms-common/effects/(warp|filter_sweep|start|stop|chroma)", "synth effect", "synthesizer effect"),
    (r"lmms-common/instruments/(piano|e_piano)|sound-icons/(piano|electric-piano)|sonic-pi-samples/ambi_piano",
     "piano", "piano"),
    (r"lmms-common/instruments/(church_organ|e_organ)", "organ", "organ"),
    (r"lmms-common/instruments/violin|sound-icons/violoncello|lmms-common/instruments/cello", "bowed strings",
     "bowed string instrument"),
    (r"lmms-common/stringsnpads/(strings|orion|heaven|space)", "strings", "string pad"),
    (r"lmms-common/stringsnpads/(juno|korg|nord)", "synth pad", "synthesizer pad"),
    (r"lmms-common/stringsnpads/(chorus|rave_choir)|sonic-pi-samples/ambi_choir", "choir", "choir"),
    (r"lmms-common/instruments/flute", "flute", "flute"),
    (r"lmms-common/instruments/trumpet|sound-icons/trumpet|lmms-common/latin/latin_brass", "brass", "trumpet"),
    (r"lmms-common/instruments/harpsichord|sound-icons/(cembalo|klavichord)", "harpsichord", "harpsichord"),
    (r"sound-icons/xylofon|sound-icons/cymbaly", "xylophone", "xylophone"),
    (r"tuxpaint-data/harp|lmms-common/stringsnpads/bell_choir", "harp", "harp"),
    (r"freedesktop/(alarm-clock|suspend-error|dialog-error|dialog-warning)", "alarm", "alarm sound"),
    (r"freedesktop/(message|complete|dialog-information|device-|service-|window-|network-|power-|trash|audio-volume)",
     "notification", "notification chime"),
    (r"freedesktop/camera-shutter|tuxpaint-data/save", "camera shutter", "camera shutter click"),
    (r"freedesktop/audio-channel-|tuxpaint-data/(areyousure|youcannot)", "spoken word", "short spoken phrase"),
    (r"tuxpaint-data/bubble", "bubbles", "bubbling"),
    (r"tuxpaint-data/(click|keyclick|scroll)", "click", "click"),
    (r"tuxpaint-data/giggle", "laughter", "giggling"),
    (r"tuxpaint-data/typewriterbell", "bell", "typewriter bell"),
    (r"tuxpaint-data/(eraser|paint)", "scrubbing", "scrubbing and brushing"),
    (r"sound-icons/(pisk|prompt)|tuxpaint-data/(bleep|prompt|tuxok)", "beep", "beep"),
    (r"sound-icons/cockchafer|sound-icons/gummy-cat", "creature", "cartoon creature sound"),
    (r"sound-icons/percussion", "percussion", "percussion hit"),
)

# General MIDI effects programs: program -> (label, description, note pattern (onset, duration) in beats,
# period in beats). The pattern repeats every period until the clip ends (at 120 bpm: 2 beats a second);
# patterns are dense enough that no effect leaves more than ~60 % of a 4 s clip silent (content.py's
# measure; TimGM6mb, 2026-12): short effects (fret noise, bird tweets, rings, shots) sound several times.
GM_EFFECTS: dict[int, tuple[str, str, tuple[tuple[float, float], ...], float]] = {
    120: ("guitar fret noise", "guitar fret noise", ((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 0.5)), 2.5),
    121: ("breath", "breathing", ((0, 1.5), (2, 1.5)), 4.0),
    122: ("ocean waves", "waves on a seashore", ((0, 7.5),), 8.0),
    123: ("bird song", "birds tweeting", ((0, 0.5), (0.5, 0.5), (1.25, 0.5), (2, 1.0)), 3.0),
    124: ("telephone ring", "telephone ringing", ((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 0.5), (2, 0.5),
                                                  (2.5, 0.5)), 4.0),
    125: ("helicopter", "helicopter flying", ((0, 7.5),), 8.0),
    126: ("applause", "applause", ((0, 7.5),), 8.0),
    127: ("gunshot", "gunshots", ((0, 0.5), (1.5, 0.5), (2.0, 0.5)), 3.0),
}

PARAMETRIC: tuple[str, ...] = ("siren", "sweep", "noise burst", "beeps")
AUGMENTATIONS: tuple[str, ...] = ("none", "gain", "pitch", "speed", "reverb", "noise")


def label_of(source: str, relpath: str) -> tuple[str, str] | None:
    """``(label, description)`` of the recorded file ``relpath`` (relative to its pack folder) of
    ``source`` by the first matching :data:`LABEL_RULES` rule, or None (such files are not used)."""
    tag = "freedesktop" if source == "sound-theme-freedesktop" else source
    key = f"{tag}/{relpath}"
    for rx, label, desc in LABEL_RULES:
        if re.match(rx, key):
            return label, desc
    return None


def _count(dur_s: float, seconds: float, rng: np.random.Generator) -> int:
    # enough events to sound for content.REPEAT_FILL of the clip, few enough to leave 50 ms between them
    from sonodiff.data.corpus.content import REPEAT_FILL

    lo = math.ceil(REPEAT_FILL * seconds / dur_s - 1e-9)
    hi = max(lo, math.floor((seconds - 0.2) / (dur_s + 0.05) + 1e-9))
    return int(rng.integers(lo, hi + 1))


def draw_parametric(kind: str, rng: np.random.Generator, seconds: float) -> tuple[dict, str]:
    """``(params, description)`` for a parametric sound of ``kind`` (see :data:`PARAMETRIC`) in a clip of
    ``seconds``. Bursts and beeps are counted so they sound for at least ``content.REPEAT_FILL`` (0.4) of
    the clip (a single 0.1 s beep in 4 s would be 97 % silence)."""
    if kind == "siren":
        rate = float(rng.choice([0.3, 0.5, 2.5, 4.0]))
        p = {"center_hz": int(rng.integers(6, 11)) * 100, "depth_hz": int(rng.integers(2, 5)) * 100, "rate_hz": rate}
        return p, ("slowly wailing siren" if rate < 1 else "fast yelping siren")
    if kind == "sweep":
        f0, f1 = float(rng.choice([200, 300, 400])), float(rng.choice([1600, 2400, 3200]))
        up = bool(rng.integers(2))
        p = {"start_hz": f0 if up else f1, "end_hz": f1 if up else f0, "wave": str(rng.choice(["sine", "square"]))}
        return p, f"{'rising' if up else 'falling'} {p['wave']} tone sweep"
    if kind == "noise burst":
        colour, burst = str(rng.choice(["white", "pink", "brown"])), float(rng.choice([0.1, 0.25, 0.5]))
        p = {"count": _count(burst, seconds, rng), "colour": colour, "burst_s": burst}
        return p, f"{p['count']} burst{'s' if p['count'] > 1 else ''} of {p['colour']} noise"
    if kind == "beeps":
        freq, beep = int(rng.choice([440, 660, 880, 1000, 1500])), float(rng.choice([0.1, 0.2, 0.4]))
        p = {"count": _count(beep, seconds, rng), "freq_hz": freq, "beep_s": beep}
        return p, f"{p['count']} beep{'s' if p['count'] > 1 else ''} at {p['freq_hz']} hertz"
    raise ValueError(f"unknown parametric sound {kind!r}; valid: {list(PARAMETRIC)}")


def _noise(colour: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if colour == "white":
        x = w
    else:
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        spec = spec / (np.sqrt(f) if colour == "pink" else f)
        x = np.fft.irfft(spec, n)
    return (x / (np.abs(x).max() + 1e-12)).astype(np.float32)


def _parametric(kind: str, p: dict, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int((seconds - 0.2) * sr)) / sr
    if kind == "siren":
        phase = 2 * np.pi * (p["center_hz"] * t - p["depth_hz"] / (2 * np.pi * p["rate_hz"])
                             * np.cos(2 * np.pi * p["rate_hz"] * t))
        return 0.5 * np.sin(phase)
    if kind == "sweep":
        dur = t[-1]
        k = np.log(p["end_hz"] / p["start_hz"]) / dur
        phase = 2 * np.pi * p["start_hz"] * (np.exp(k * t) - 1) / k
        return 0.5 * (np.sign(np.sin(phase)) * 0.5 if p["wave"] == "square" else np.sin(phase))
    out = np.zeros_like(t)
    if kind == "noise burst":
        n, L = p["count"], int(p["burst_s"] * sr)
        for i in range(n):
            s = int(i * len(t) / n)
            seg = _noise(p["colour"], L, rng) * np.hanning(L)
            out[s:s + L] += seg[: len(out) - s]
        return out
    if kind == "beeps":
        L = int(p["beep_s"] * sr)
        env = np.minimum(1, np.minimum(np.arange(L), np.arange(L)[::-1]) / (0.005 * sr))
        for i in range(p["count"]):
            s = int(i * len(t) / p["count"])
            seg = 0.5 * np.sin(2 * np.pi * p["freq_hz"] * np.arange(L) / sr) * env
            out[s:s + L] += seg[: len(out) - s]
        return out
    raise ValueError(f"unknown parametric sound {kind!r}; valid: {list(PARAMETRIC)}")


def draw_augmentation(aug: str, rng: np.random.Generator) -> dict:
    """Parameters for augmentation ``aug`` (see :data:`AUGMENTATIONS`), drawn from ``rng``."""
    if aug == "none":
        return {}
    if aug == "gain":
        return {"gain_db": float(rng.choice([-12.0, -9.0, -6.0]))}
    if aug == "pitch":
        return {"semitones": int(rng.choice([-4, -3, -2, 2, 3, 4]))}
    if aug == "speed":
        return {"factor": float(rng.choice([0.8, 1.25]))}
    if aug == "reverb":
        return {"rt60_s": float(rng.choice([0.4, 0.8, 1.5])), "wet": float(rng.choice([0.3, 0.5]))}
    if aug == "noise":
        return {"snr_db": float(rng.choice([10.0, 15.0, 20.0])), "colour": str(rng.choice(["white", "pink", "brown"]))}
    raise ValueError(f"unknown augmentation {aug!r}; valid: {list(AUGMENTATIONS)}")


def augment(x: np.ndarray, sr: int, aug: str, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Apply augmentation ``aug`` with parameters ``p`` to ``x [T]``. ``gain`` is applied after loudness
    normalisation (by the builder), so it is the identity here."""
    if aug in ("none", "gain"):
        return x
    if aug == "pitch":
        import warnings

        import librosa

        with warnings.catch_warnings():  # librosa warns that n_fft exceeds very short one-shots; harmless
            warnings.simplefilter("ignore", UserWarning)
            return librosa.effects.pitch_shift(x.astype(np.float32), sr=sr, n_steps=p["semitones"])
    if aug == "speed":
        from scipy.signal import resample_poly

        fr = Fraction(p["factor"]).limit_denominator(20)
        return resample_poly(x, fr.denominator, fr.numerator)
    if aug == "reverb":
        from scipy.signal import fftconvolve

        n = int(p["rt60_s"] * sr)
        ir = rng.standard_normal(n) * np.exp(-6.9078 * np.arange(n) / n)  # -60 dB at rt60
        ir /= np.sqrt(np.sum(ir ** 2))
        wet = fftconvolve(x, ir)[: len(x) + n // 2]
        dry = np.pad(x, (0, len(wet) - len(x)))
        return (1 - p["wet"]) * dry + p["wet"] * wet * (np.sqrt(np.mean(dry ** 2)) / (np.sqrt(np.mean(wet ** 2)) + 1e-12))
    if aug == "noise":
        nz = _noise(p["colour"], len(x), rng)
        ps, pn = np.mean(x ** 2), np.mean(nz ** 2) + 1e-20
        return x + nz * np.sqrt(ps / pn / 10 ** (p["snr_db"] / 10))
    raise ValueError(f"unknown augmentation {aug!r}; valid: {list(AUGMENTATIONS)}")


def gm_notes(program: int, seconds: float) -> tuple[tuple[float, float, int, int], ...]:
    """The notes (beats at 120 bpm, middle C, velocity 100) of GM effect ``program`` in a clip of ``seconds``:
    its pattern repeated every period, notes starting at least 0.3 s before the end."""
    _, _, pattern, period = GM_EFFECTS[program]
    out, k = [], 0
    while k * period < seconds * 2 - 0.6:
        out += [(on + k * period, d, 60, 100) for on, d in pattern if on + k * period < seconds * 2 - 0.6]
        k += 1
    return tuple(out)


def render_sfx(f: dict, seconds: float, sr: int, rng: np.random.Generator,
               soundfont: str | None) -> tuple[np.ndarray, int, dict]:
    """Source audio (before augmentation) for sfx fields ``f`` -> ``(audio [T], sample rate, fields)``.

    A recorded one-shot is repeated to fill the clip (:func:`content.repeat_to_fill`; ``repeats`` is set
    in the returned fields and must equal the plan's, which came from the same rule at detection)."""
    kind = f["kind"]
    if kind == "recorded":
        import soundfile as sf

        from sonodiff.data.corpus.content import repeat_to_fill

        data, fsr = sf.read(f["file"], dtype="float32", always_2d=True)
        audio, k = repeat_to_fill(data.mean(axis=1), fsr, seconds)
        if k != f["repeats"]:
            raise RuntimeError(f"{f['file']} changed since the plan was made: it now repeats {k} times, the "
                               f"plan says {f['repeats']}; rebuild in a new folder")
        return audio, fsr, f
    if kind == "gm":
        from sonodiff.data.corpus.music import render_midi

        midi = write_midi([Part(f["program"], gm_notes(f["program"], seconds))], 120.0)
        return render_midi(midi, sr, soundfont), sr, f
    if kind == "parametric":
        return _parametric(f["label"], f["params"], seconds, sr, rng).astype(np.float32), sr, f
    raise ValueError(f"unknown sfx kind {kind!r}; valid: recorded, gm, parametric")
