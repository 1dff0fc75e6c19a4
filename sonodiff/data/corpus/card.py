"""The CORPUS.md card written next to a built corpus: sources, licences, counts, durations, seed, version."""

from __future__ import annotations

import os
from collections import Counter

from sonodiff.data.corpus import content as C
from sonodiff.data.corpus.sources import SOURCES, Inventory, install_commands
from sonodiff.utils.atomic import atomic_write_text

__all__ = ["render_card", "write_card"]


def _table(rows: list[tuple], head: tuple) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _share(path: str) -> str:
    return path.replace("/usr/share/", "")  # machine-independent, as in the records


def _usable(inv: Inventory, name: str, present: dict) -> str:
    if not present.get(name):
        return "no"
    its = [i for i in inv.items if i.source == name and i.kind in ("voice", "sample", "soundfont")]
    if not its:
        return "yes"
    kind = its[0].kind
    ok = sum(i.status == "present" for i in its)
    return f"yes ({ok} of {len(its)} {kind}s)"


def render_card(settings: dict, records: list[dict], info: dict, inv: Inventory, skipped: dict) -> str:
    """The card's Markdown text (deterministic: no dates or host names, so builds compare byte for byte).

    Lists the missing source items (with install commands) and the recorded files the content rule left
    out (with reasons) of the built domains."""
    present = inv.present()
    domains = tuple(settings["domains"])
    by_dom = Counter(r["domain"] for r in records)
    by_split = Counter((r["domain"], r["split"]) for r in records)
    by_src = Counter(r["source"] for r in records)
    fits = Counter((r["domain"], r["fit"]) for r in records)
    src_secs: dict[str, float] = {}
    for r in records:
        src_secs[r["domain"]] = src_secs.get(r["domain"], 0.0) + min(r["source_seconds"], r["duration"])
    parts = [
        "# sonodiff built-in corpus", "",
        f"Corpus version {settings['version']}, preset `{settings['preset']}`, seed {settings['seed']}"
        + (f", limit {settings['limit']} clips per domain" if settings.get("limit") else "") + ".",
        f"Mono PCM-16 WAV clips of {settings['seconds']} s at {settings['sample_rate']} Hz, loudness-normalised "
        "to -23 LUFS (ITU-R BS.1770-4; turned down where the peak would exceed -1 dBFS), trimmed or zero-padded "
        "(`source_seconds` is the true length before fitting; `fit` says which).",
        f"Every clip has an RMS of at least {C.MIN_RMS_DBFS:.0f} dBFS over its whole length and at most "
        f"{100 * C.MAX_SILENCE_FRACTION:.0f} % silent {1000 * C.FRAME_S:.0f} ms frames (silent: "
        f"{C.SILENCE_BELOW_PEAK_DB:.0f} dB or more below the loudest frame, or under {C.SILENCE_FLOOR_DBFS:.0f} dBFS). "
        f"Recorded files need at least {C.MIN_SOUND_S} s of sound; one with less than {C.REPEAT_FILL} x the clip "
        f"length of sound is repeated (at most one copy per {C.MIN_PERIOD_S} s, `repeats` in the metadata, "
        "\"repeated k times\" in the caption); the `gain` augmentation stops at "
        f"{C.GAIN_FLOOR_DBFS:.0f} dBFS RMS (`gain_db` is the gain applied, `gain_db_drawn` the one drawn).",
        "Rebuild with `sonodiff corpus build OUT --preset {p} --seed {s}` on a machine with the same "
        "sources: the clips and metadata are byte-identical.".format(p=settings["preset"], s=settings["seed"]),
        "", "## Counts", "",
        _table([(d, by_dom[d], *(by_split[(d, s)] for s in ("train", "valid", "test", "test_heldout")),
                 f"{src_secs.get(d, 0) / 60:.1f} min", fits[(d, 'trimmed')])
                for d in sorted(by_dom)],
               ("domain", "clips", "train", "valid", "test", "test_heldout", "audio before padding", "trimmed")),
        "", f"Total: {len(records)} clips, {len(records) * settings['seconds'] / 3600:.2f} h.", "",
        "`test_heldout` holds combinations (speech: voice x sentence; music: instrument x tempo class; "
        "sfx: label x augmentation) that never occur in `train`, though each part does.", "",
        "## Sources", "",
        _table([(n, s.domain, _usable(inv, n, present), by_src.get(n, 0),
                 " ".join(s.apt) or "-", " ".join(s.pip) or "-", s.licence)
                for n, s in SOURCES.items() if s.domain in domains],
               ("source", "domain", "usable", "clips", "apt", "pip", "licence")),
        "", f"General MIDI soundfont: `{settings['soundfont']}`." if settings.get("soundfont") else "",
        f"Sentences: {info.get('text_source', '-')}.", "",
    ]
    if skipped:
        parts += ["## Skipped domains", ""]
        parts += [f"- **{d}**: no source installed. Install with `{h}`" for d, h in skipped.items()]
        parts.append("")
    missing = inv.missing(domains)
    if missing:
        parts += ["## Missing sources", "", "Not on the machine that built this corpus, so not used:", "",
                  _table([(i.source, i.kind, f"`{_share(i.name)}`", i.reason, f"`{install_commands([i])}`")
                          for i in missing], ("source", "kind", "item", "why", "install")),
                  "", "To install them all:", "", "```", install_commands(missing), "```", ""]
    rejected = inv.rejected(domains)
    if rejected:
        parts += ["## Recorded files left out", "",
                  "These files fail the recorded-sample rule (sonodiff.data.corpus.content) and are not used:", "",
                  _table([(i.source, f"`{_share(i.name)}`", i.label, i.reason) for i in rejected],
                         ("source", "file", "label", "reason")), ""]
    parts += ["## Fields", "",
              "Every row of `metadata.jsonl`: `path`, `caption`, `domain`, `split`, `id`, `source`, `combo`, "
              "`seed`, `sample_rate`, `duration`, `source_seconds`, `fit`, `loudness_lufs`.",
              "- speech: `speaker` (= `voice`), `transcript`, `engine`, `gender`, `accent`, `rate` (relative "
              "to the engine default), `pitch` (espeak-ng 0-99), `sentence_id`.",
              "- music: `label` (= `instrument`), `kind` (melody, arpeggio, chords, drums, score), "
              "`tempo` (quarter notes per minute), "
              "`tempo_class`, `key`, `mode`, `register`, `texture`, `style` (drums), `source_score`, `title`, "
              "`start_measure` (scores), `midi` (the rendered MIDI file), `notes` (melodies: onset s, offset s, "
              "MIDI pitch).",
              "- sfx: `label`, `description`, `kind` (recorded, gm, parametric), `file`, `repeats` (recorded), "
              "`program`, `params`, `augmentation`, `aug_params`.", "",
              "Captions are drawn from several templates per domain; every word in them comes from these fields.",
              ""]
    return "\n".join(parts)


def write_card(path: str | os.PathLike, settings: dict, records: list[dict], info: dict, inv: Inventory,
               skipped: dict) -> None:
    """Write :func:`render_card` to ``path`` atomically."""
    atomic_write_text(path, render_card(settings, records, info, inv, skipped))
