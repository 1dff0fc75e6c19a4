"""Sentences to speak and caption templates for the three domains.

Sentences come from, in order of preference: the LJ Speech transcripts (public domain) when a
``shared/data/text/ljspeech_transcripts.psv`` is found, the Debian ``fortunes`` package, or the
built-in Harvard sentences (IEEE Recommended Practice for Speech Quality Measurements, 1969).
Captions are drawn from several templates with synonyms so a model learns language rather than one
template; every word of a caption comes from a structured field, so captions are true by construction.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["HARVARD", "load_sentences", "music_caption", "normalize_words", "sfx_caption", "speech_caption"]

HARVARD: tuple[str, ...] = (
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
)

# sentences with spelled-out numbers are left out: ASR writes them as digits, which would count as errors
_NUMBER_WORDS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "hundred thousand million first second third fourth fifth".split()
)
_CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,.'?!;-]*$")


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation: the form transcripts are compared in (WER)."""
    return re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()


def _text_file() -> Path | None:
    env = os.environ.get("SONODIFF_TEXT_DIR")
    cands = [Path(env)] if env else []
    cands += [Path.cwd() / "shared/data/text", Path.cwd().parent / "shared/data/text"]
    for c in cands:
        f = c / "ljspeech_transcripts.psv"
        if f.is_file():
            return f
    return None


def _fortunes() -> list[str]:
    out: list[str] = []
    root = Path("/usr/share/games/fortunes")
    for name in ("fortunes", "wisdom", "literature", "people", "work", "science"):
        f = root / name
        if f.is_file():
            for entry in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
                entry = " ".join(entry.split())
                if "--" not in entry and "\t" not in entry:
                    out.append(entry)
    return out


def load_sentences(max_words: int, min_words: int = 4, min_chars: int = 0) -> tuple[list[str], str]:
    """``(sentences, source name)``: clean sentences of ``min_words..max_words`` words and at least
    ``min_chars`` characters, in file order."""
    f = _text_file()
    if f is not None:
        raw = [line.split("|")[-1] for line in f.read_text(encoding="utf-8").splitlines() if "|" in line]
        source = "LJ Speech transcripts (public domain)"
    else:
        raw = _fortunes()
        source = "fortunes (Debian package)"
        if not raw:
            raw, source = list(HARVARD), "Harvard sentences (built in)"
    keep = [s.strip() for s in raw if _CLEAN.match(s.strip())
            and min_words <= len(s.split()) <= max_words and len(s.strip()) >= min_chars
            and not (set(normalize_words(s)) & _NUMBER_WORDS)]
    if len(keep) < 20:  # too few usable lines in that source: fall back to the built-in list
        keep = [s for s in HARVARD if min_words <= len(s.split()) <= max_words and len(s) >= min_chars]
        source = "Harvard sentences (built in)"
    return keep, source


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


_ACCENT_ADJ = {"American": "an American", "British": "a British", "Scottish": "a Scottish",
               "Caribbean": "a Caribbean", "New York": "a New York", "West Midlands": "a West Midlands",
               "Lancashire": "a Lancashire"}
_PERSON = {"female": ("a woman", "a female speaker", "a female voice"),
           "male": ("a man", "a male speaker", "a male voice")}


def speech_caption(f: dict, rng: np.random.Generator) -> str:
    """Caption for speech fields ``gender, accent, rate_word, pitch_word, transcript, engine_kind``."""
    who = _pick(rng, _PERSON[f["gender"]])
    acc = _ACCENT_ADJ[f["accent"]]
    text = f["transcript"].rstrip(".!?;,").lower()
    t = int(rng.integers(5))
    if t == 0:
        return f"{who} with {acc} accent says: {text}"
    if t == 1:
        return f"{who} speaking {f['rate_word']} with {acc} accent: \"{text}\""
    if t == 2:
        return f"{f['engine_kind']} speech, {who.split(' ', 1)[1]}, {acc.split(' ', 1)[1]} accent, saying \"{text}\""
    if t == 3 and f["pitch_word"] != "natural":
        return f"{who} with a {f['pitch_word']} voice reads aloud: {text}"
    return f"\"{text}\", spoken by {who} with {acc} accent"


def _tempo_word(bpm: float, rng: np.random.Generator) -> str:
    if bpm < 80:
        return _pick(rng, ("slow", "slow", "unhurried", "calm"))
    if bpm < 120:
        return _pick(rng, ("moderate", "mid-tempo", "medium-paced"))
    return _pick(rng, ("fast", "quick", "lively", "up-tempo"))


def music_caption(f: dict, rng: np.random.Generator) -> str:
    """Caption for music fields ``instrument, tempo, key, mode, register, score_desc, style, kind``."""
    inst, bpm, tw = f["instrument"], int(round(f["tempo"])), _tempo_word(f["tempo"], rng)
    key = f"{f['key']} {f['mode']}" if f.get("key") else ""
    kind = f["kind"]
    if kind == "drums":
        return _pick(rng, (f"a {tw} {f['style']} drum beat at {bpm} bpm",
                           f"{f['style']} drum pattern, {bpm} beats per minute",
                           f"drums playing a {tw} {f['style']} groove, {bpm} bpm"))
    if kind == "score":
        what = f["score_desc"]
        return _pick(rng, (f"{what} played by {_a(inst)} {inst}, {bpm} bpm",
                           f"{_a(tw)} {tw} rendition of {what} on {inst} in {key}",
                           f"{inst} performing {what}, {tw}, {bpm} bpm"))
    noun = {"melody": ("melody", "tune", "melodic line"), "arpeggio": ("arpeggio", "arpeggiated pattern",
            "broken-chord pattern"), "chords": ("chord progression", "sequence of chords", "progression of chords")}[kind]
    n = _pick(rng, noun)
    reg = f["register"]
    return _pick(rng, (f"{_a(tw)} {tw} {inst} {n} in {key}, {bpm} bpm",
                       f"{inst}, {n}, {key}, {bpm} bpm, {reg} register",
                       f"{inst} playing {_a(n)} {n} in {key} at {bpm} bpm, {reg} register",
                       f"{n} on {inst} in {key}; tempo {bpm} bpm"))


_MASS = ("applause", "crackling vinyl hiss", "waves on a seashore", "guitar fret noise", "choir")


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(desc: str) -> str:
    """``desc`` with "a"/"an" unless it is a plural, a count, a gerund or a mass noun."""
    if desc[:1].isdigit() or desc.endswith("ing") or (desc.endswith("s") and not desc.endswith("ss")) \
            or desc in _MASS:
        return desc
    return f"{_a(desc)} {desc}"


_AUG_TEXT = {"none": ("", ""), "gain": (", quiet", " at a low volume"), "reverb": (" in a reverberant room", " with reverb"),
             "noise": (" over background noise", " with background noise"),
             "pitch": (" pitched {dir}", " shifted {dir} in pitch"), "speed": (" played {speedw}", " {speedw}")}


def sfx_caption(f: dict, rng: np.random.Generator) -> str:
    """Caption for sfx fields ``label, description, augmentation, aug_params`` (and ``repeats``: a
    recorded one-shot repeated k > 1 times to fill the clip is captioned "..., repeated k times")."""
    desc = f["description"]
    rep = f", repeated {f['repeats']} times" if f.get("repeats", 1) > 1 else ""
    aug = f["augmentation"]
    extra = _pick(rng, _AUG_TEXT[aug])
    p = f.get("aug_params", {})
    if aug == "pitch":
        extra = extra.format(dir="up" if p["semitones"] > 0 else "down")
    if aug == "speed":
        extra = extra.format(speedw="sped up" if p["factor"] > 1 else "slowed down")
    if rep and extra and not extra.startswith(","):
        extra = "," + extra
    return _pick(rng, (f"{_with_article(desc)}{rep}{extra}", f"the sound of {_with_article(desc)}{rep}{extra}",
                       f"{desc}{rep}{extra}", f"sound effect: {desc}{rep}{extra}"))
