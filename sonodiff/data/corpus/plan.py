"""The build plan: every clip's parameters and split, drawn from one seed before anything is rendered.

A plan is a list of clip specs (JSON-able dicts: ``id, domain, seed, split, combo, fields``). It depends
only on the preset, seed, domains, clip length and which source items are present (the
:class:`sources.Inventory`: voices, recorded files that passed the content rule, soundfont), so a build
is reproducible and resumable: a worker renders a spec from the spec alone.

Speech sentences have at least ``SPEECH_CHARS_PER_SECOND`` (10) characters per second of clip, so speech
fills enough of it (the fastest voice measured, piper at rate 1.15, makes 0.038 s of sound per
character: a 40-character sentence sounds for about 1.5 s of a 4 s clip, under the 80 % silence limit).

Splits: a held-out-combinations split (``test_heldout``) takes every clip of some combinations
(voice x sentence, instrument x tempo class, label x augmentation) whose two parts each still occur in
``train``; the rest is split train/valid/test at random. Generalisation to unseen combinations of
seen factors can then be measured (systematic generalisation, as in Lake & Baroni, ICML 2018).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from sonodiff.data.corpus import music as M
from sonodiff.data.corpus import sfx as S
from sonodiff.data.corpus.sources import SOURCES, Inventory
from sonodiff.data.corpus.speech import ENGINE_KIND, ESPEAK_PITCHES, RATES, voices
from sonodiff.data.corpus.text import load_sentences

__all__ = ["DOMAIN_SHARE", "PRESETS", "SPEECH_CHARS_PER_SECOND", "SPLITS", "assign_splits", "domain_counts",
           "domain_sources", "make_plan"]

PRESETS: dict[str, int] = {"small": 200, "medium": 5000, "large": 50000}
DOMAIN_SHARE: dict[str, float] = {"speech": 0.35, "music": 0.35, "sfx": 0.30}
SPLITS: tuple[str, ...] = ("train", "valid", "test", "test_heldout")
# share of speech clips per engine (renormalised over the engines present): the neural voice is the
# most natural, espeak-ng the most varied (accents, variants)
ENGINE_SHARE: dict[str, float] = {"espeak-ng": 0.4, "flite": 0.2, "festival": 0.15, "piper": 0.25}
HELDOUT_FRACTION, VALID_FRACTION, TEST_FRACTION = 0.08, 0.06, 0.08
SPEECH_CHARS_PER_SECOND = 10
_MIN_SENTENCES = 8


def domain_counts(preset: str, domains: tuple[str, ...]) -> dict[str, int]:
    """Clips per domain for ``preset`` (a domain keeps its share whether or not others are built)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {list(PRESETS)}")
    n = PRESETS[preset]
    return {d: int(round(n * DOMAIN_SHARE[d])) for d in domains}


def _speech(n: int, seconds: float, inv: Inventory, rng: np.random.Generator) -> tuple[list[dict], str]:
    allv = voices(inv.voice_names())
    # about six clips per voice, so per-voice checks and voice x sentence held-out pairs are possible;
    # half of the voices from espeak-ng's variants, half from the other engines (when present)
    k = min(len(allv), max(8, n // 6))
    esp = [v for v in allv if v.source == "espeak-ng"]
    oth = [v for v in allv if v.source != "espeak-ng"]
    n_oth = min(len(oth), max(k // 2, k - len(esp)))
    pick_o = sorted(rng.choice(len(oth), n_oth, replace=False)) if n_oth else []
    pick_e = sorted(rng.choice(len(esp), min(len(esp), k - n_oth), replace=False)) if esp else []
    vs = [esp[int(i)] for i in pick_e] + [oth[int(i)] for i in pick_o]
    max_words = max(4, int(2.4 * seconds) - 1)
    min_chars = int(np.ceil(SPEECH_CHARS_PER_SECOND * seconds))
    cands, text_source = load_sentences(max_words, min_chars=min_chars)
    if len(cands) < _MIN_SENTENCES:
        raise ValueError(f"speech clips of {seconds} s need sentences of at most {max_words} words and at least "
                         f"{min_chars} characters (so speech fills the clip); {text_source} has {len(cands)}, "
                         f"at least {_MIN_SENTENCES} needed. Use a shorter --seconds or leave speech out "
                         "(--domains music,sfx).")
    m = min(len(cands), max(8, n // 4))
    pool = [cands[i] for i in sorted(rng.choice(len(cands), m, replace=False))]
    engines = sorted({v.source for v in vs}, key=list(ENGINE_SHARE).index)
    by_eng = {e: [v for v in vs if v.source == e] for e in engines}
    w = np.array([ENGINE_SHARE[e] for e in engines])
    used = {e: 0 for e in engines}
    specs = []
    for i in range(n):
        e = engines[int(rng.choice(len(engines), p=w / w.sum()))]
        ev = by_eng[e]
        if used[e] % len(ev) == 0:  # cycle through the engine's voices in a fresh random order
            by_eng[e] = ev = [ev[int(j)] for j in rng.permutation(len(ev))]
        v = ev[used[e] % len(ev)]
        used[e] += 1
        s = int(rng.integers(len(pool)))
        rate = float(RATES[int(rng.integers(len(RATES)))])
        pitch = int(list(ESPEAK_PITCHES)[int(rng.integers(3))]) if v.source == "espeak-ng" else None
        f = {"voice": v.name, "engine": v.source, "engine_kind": ENGINE_KIND[v.source], "gender": v.gender, "accent": v.accent, "rate": rate,
             "rate_word": {0.85: "slowly", 1.0: "at a normal pace", 1.15: "quickly"}[rate],
             "pitch": pitch, "pitch_word": ESPEAK_PITCHES[pitch] if pitch is not None else "natural",
             "transcript": pool[s], "sentence_id": s}
        specs.append({"domain": "speech", "source": v.source, "combo": [v.name, f"sentence {s}"], "fields": f})
    return specs, text_source


def _music(n: int, present: dict[str, bool], rng: np.random.Generator) -> list[dict]:
    cat = M.score_catalogue() if present["music21"] else {"chorale": [], "folk": []}
    kinds = ["melody", "melody", "arpeggio", "chords", "drums"]
    if cat["chorale"]:
        kinds += ["chorale", "folk", "chorale", "folk"]
    specs = []
    tclasses = list(M.TEMPO_CLASSES)
    for _ in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        tc = tclasses[int(rng.integers(3))]
        tempos = M.TEMPO_CLASSES[tc]
        f: dict = {"tempo": float(tempos[int(rng.integers(len(tempos)))]), "tempo_class": tc}
        if kind in ("chorale", "folk"):
            paths = cat[kind]
            path = paths[int(rng.integers(len(paths)))]
            insts = M.ENSEMBLES if kind == "chorale" else M.FOLK_INSTRUMENTS
            inst = insts[int(rng.integers(len(insts)))]
            desc = "a Bach chorale" if kind == "chorale" else f"a traditional {M.folk_kind(path)}"
            f.update(kind="score", instrument=inst, source_score=path, score_desc=desc,
                     start_measure=int(rng.integers(0, 5)), register="mixed",
                     texture="four-part chorale" if kind == "chorale" else "monophonic")
            source = "music21"
        elif kind == "drums":
            styles = list(M.DRUM_STYLES)
            f.update(kind="drums", instrument="drum kit", style=styles[int(rng.integers(len(styles)))],
                     texture="percussive", key=None, mode=None, register=None)
            source = "fluidsynth"
        else:
            pool = list(M.MELODY_INSTRUMENTS) if kind == "melody" else list(M.CHORD_INSTRUMENTS)
            inst = pool[int(rng.integers(len(pool)))]
            regs = M.MELODY_INSTRUMENTS.get(inst, ("middle",)) if kind == "melody" else ("low", "middle")
            f.update(kind=kind, instrument=inst, key=M.KEYS[int(rng.integers(12))],
                     mode=("major", "minor")[int(rng.integers(2))], register=regs[int(rng.integers(len(regs)))],
                     texture={"melody": "monophonic", "arpeggio": "arpeggiated", "chords": "chordal"}[kind])
            source = "fluidsynth"
        specs.append({"domain": "music", "source": source, "combo": [f["instrument"], tc], "fields": f})
    return specs


def _sfx(n: int, seconds: float, inv: Inventory, rng: np.random.Generator) -> list[dict]:
    by_label: dict[str, list] = {}
    for it in inv.samples():
        by_label.setdefault(it.label, []).append(it)
    labels = sorted(by_label)
    kinds = (["recorded"] * 11 if labels else []) + (["gm"] * 4 if inv.present()["gm-effects"] else []) \
        + ["parametric"] * 5
    augs = list(S.AUGMENTATIONS)
    aug_p = np.array([0.35] + [0.13] * (len(augs) - 1))
    specs = []
    for _ in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "recorded":
            lab = labels[int(rng.integers(len(labels)))]
            it = by_label[lab][int(rng.integers(len(by_label[lab])))]
            src = it.source
            f = {"kind": "recorded", "file": it.name, "label": it.label, "description": it.description,
                 "repeats": it.repeats}
        elif kind == "gm":
            prog = sorted(S.GM_EFFECTS)[int(rng.integers(len(S.GM_EFFECTS)))]
            label, desc = S.GM_EFFECTS[prog][:2]
            src, f = "gm-effects", {"kind": "gm", "program": prog, "label": label, "description": desc}
        else:
            pk = S.PARAMETRIC[int(rng.integers(len(S.PARAMETRIC)))]
            params, desc = S.draw_parametric(pk, rng, seconds)
            src, f = "parametric", {"kind": "parametric", "label": pk, "params": params, "description": desc}
        aug = augs[int(rng.choice(len(augs), p=aug_p / aug_p.sum()))]
        f.update(augmentation=aug, aug_params=S.draw_augmentation(aug, rng))
        specs.append({"domain": "sfx", "source": src, "combo": [f["label"], aug], "fields": f})
    return specs


def assign_splits(specs: list[dict], rng: np.random.Generator) -> None:
    """Set ``spec["split"]`` in place for the clips of one domain (see the module docstring)."""
    n = len(specs)
    keys = [tuple(s["combo"]) for s in specs]
    per_key = Counter(keys)
    ca = Counter(k[0] for k in keys)
    cb = Counter(k[1] for k in keys)
    uniq = sorted(per_key)
    held: set[tuple[str, str]] = set()
    n_held, target = 0, int(round(HELDOUT_FRACTION * n))
    for j in rng.permutation(len(uniq)):
        if n_held >= target:
            break
        k = uniq[int(j)]
        c = per_key[k]
        # both parts must keep at least two clips outside the held-out split (one will be forced to train)
        if ca[k[0]] - c >= 2 and cb[k[1]] - c >= 2 and n_held + c <= max(target, 1) * 1.5:
            held.add(k)
            ca[k[0]] -= c
            cb[k[1]] -= c
            n_held += c
    u = rng.random(n)
    for s, k, x in zip(specs, keys, u):
        if k in held:
            s["split"] = "test_heldout"
        elif x < VALID_FRACTION:
            s["split"] = "valid"
        elif x < VALID_FRACTION + TEST_FRACTION:
            s["split"] = "test"
        else:
            s["split"] = "train"
    # every part of a held-out combination must occur in train: move the first other clip there if not
    train_a = {k[0] for s, k in zip(specs, keys) if s["split"] == "train"}
    train_b = {k[1] for s, k in zip(specs, keys) if s["split"] == "train"}
    for pos, parts in ((0, {k[0] for k in held}), (1, {k[1] for k in held})):
        have = train_a if pos == 0 else train_b
        for p in sorted(parts - have):
            for s, k in zip(specs, keys):
                if k[pos] == p and s["split"] in ("valid", "test"):
                    s["split"] = "train"
                    train_a.add(k[0])
                    train_b.add(k[1])
                    break
    train_keys = {k for s, k in zip(specs, keys) if s["split"] == "train"}
    assert not (held & train_keys), "a held-out combination leaked into train"


def domain_sources(inv: Inventory, domains: tuple[str, ...]) -> dict[str, list[str]]:
    """``{domain: [usable sources]}`` for ``domains`` (a domain with none is left out of a plan)."""
    present = inv.present()
    return {d: [n for n, s in SOURCES.items() if s.domain == d and present[n]] for d in domains}


def make_plan(preset: str, seed: int, domains: tuple[str, ...], seconds: float,
              inv: Inventory) -> tuple[list[dict], dict]:
    """``(specs, info)``: the clip specs of a build, in render order, and plan facts for CORPUS.md.

    Only the present items of ``inv`` are drawn from; a domain with no usable source is left out.
    """
    counts = domain_counts(preset, domains)
    have = domain_sources(inv, domains)
    info: dict = {"counts": {}}
    specs: list[dict] = []
    for d in domains:
        if not have[d]:
            continue
        rng = np.random.default_rng([seed, ("speech", "music", "sfx").index(d)])
        if d == "speech":
            ds, info["text_source"] = _speech(counts[d], seconds, inv, rng)
        elif d == "music":
            ds = _music(counts[d], inv.present(), rng)
        else:
            ds = _sfx(counts[d], seconds, inv, rng)
        assign_splits(ds, rng)
        for i, s in enumerate(ds):
            s["id"] = f"{d}-{i:06d}"
            s["seed"] = int(rng.integers(2 ** 31 - 1))
        info["counts"][d] = len(ds)
        specs += ds
    # interleave domains so workers share the load and a partial build covers all domains
    specs.sort(key=lambda s: (int(s["id"].rsplit("-", 1)[1]), s["domain"]))
    return specs, info
