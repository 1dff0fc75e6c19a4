"""Build the corpus: detect sources, plan, render clips in worker processes, write metadata and the card.

Layout of ``OUT``::

    OUT/clips/<domain>/<id>.wav      mono PCM-16 clips, fixed rate and length
    OUT/clips/music/<id>.mid         the MIDI each music clip was rendered from
    OUT/metadata.jsonl               one JSON object per clip (folder-dataset format)
    OUT/CORPUS.md                    the card: sources, licences, counts, durations, seed, version
    OUT/.build/plan.json             the settings and plan hash (a resumed build must match it)
    OUT/.build/records/<id>.json     per-clip records; metadata.jsonl is assembled from them at the end

Every file is written to a temporary name and renamed (:mod:`sonodiff.utils.atomic`), so a killed build
never leaves a half clip; a re-run deletes such temporary files, then renders only the clips without a
record. Each clip depends only on its spec (its own seed), so the output is byte-identical for a seed
and the same sources, whatever the number of workers or interruptions.

Before anything is rendered, every source item is detected (:func:`sources.detect_items`): missing voices,
soundfonts, programs and packs are named in the log with the command that installs them (``strict``
makes any of them an error instead), recorded files failing the content rule are left out, and both are
listed in CORPUS.md. The set of items used is part of the plan hash, so a resumed build whose sources
changed is refused. Every clip must pass the acceptance rule of :mod:`.content` (RMS >= -40 dBFS, at most
80 % silent frames); one that does not is a render error naming the clip.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sonodiff.data.corpus.content import PEAK_LIMIT, TARGET_LUFS
from sonodiff.data.corpus.sources import (
    DOMAINS,
    SOURCES,
    Inventory,
    Item,
    MissingSourcesError,
    detect_items,
    install_commands,
    install_hint,
)
from sonodiff.utils.atomic import atomic_write_bytes, atomic_write_json, is_temp_name

__all__ = ["CORPUS_VERSION", "PEAK_LIMIT", "TARGET_LUFS", "BuildConfig", "build", "render_clip"]

# 2: per-item source detection, the content and acceptance rules (repeated one-shots, denser parametric
# and GM effects, drum-kit reverb, shorter xylophone/marimba notes, sentences of >= 10 characters a second)
CORPUS_VERSION = "2"


@dataclass(frozen=True)
class BuildConfig:
    """Settings of one build. ``limit``: keep only the first ``limit`` clips of each domain (plan order);
    ``strict``: any missing source item of the requested domains is an error raised before rendering
    (rejected recorded files are not: they are a property of the package, listed in CORPUS.md)."""

    out: str
    preset: str = "small"
    seed: int = 0
    domains: tuple[str, ...] = DOMAINS
    sample_rate: int = 16000
    seconds: float = 4.0
    workers: int = 1
    limit: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        bad = [d for d in self.domains if d not in DOMAINS]
        if bad or not self.domains:
            raise ValueError(f"unknown or empty domains {list(self.domains)}; valid: {list(DOMAINS)}")
        if not 8000 <= self.sample_rate <= 48000:
            raise ValueError(f"sample_rate must be in [8000, 48000] Hz, got {self.sample_rate}")
        if not 1.0 <= self.seconds <= 30.0:
            raise ValueError(f"seconds must be in [1, 30], got {self.seconds}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if not isinstance(self.strict, bool):
            raise TypeError(f"strict must be True or False, got {self.strict!r}")


def render_clip(spec: dict, cfg: dict) -> dict:
    """Render one clip spec into ``cfg["out"]`` (wav, record; midi for music) and return its record.

    Order: source audio (a recorded one-shot repeated to fill the clip) -> resample -> sfx augmentation ->
    fit to the clip length -> loudness normalisation -> gain augmentation (never under
    ``content.GAIN_FLOOR_DBFS``; the gain applied is recorded) -> acceptance rule -> write.
    Raises ``RuntimeError`` naming the clip when it breaks the acceptance rule (nothing is written then).
    """
    import torch

    from sonodiff.audio.io import resample, save_audio
    from sonodiff.data.corpus import content as C
    from sonodiff.data.corpus import text as T

    out, sr, seconds = Path(cfg["out"]), int(cfg["sample_rate"]), float(cfg["seconds"])
    rng = np.random.default_rng([spec["seed"], 1])
    f = dict(spec["fields"])
    d = spec["domain"]
    rel = f"clips/{d}/{spec['id']}.wav"
    extra: dict = {}
    if d == "speech":
        from sonodiff.data.corpus.speech import render_speech

        audio, asr, f = render_speech(spec, seconds)
    elif d == "music":
        from sonodiff.data.corpus.midi import notes_in_seconds
        from sonodiff.data.corpus.music import music_midi, render_midi

        midi, f, parts = music_midi(f, seconds, rng)
        audio, asr = render_midi(midi, sr, cfg["soundfont"]), sr
        mid_rel = f"clips/music/{spec['id']}.mid"
        atomic_write_bytes(out / mid_rel, midi)
        extra["midi"] = mid_rel
        if f["kind"] == "melody":
            extra["notes"] = [[round(a, 4), round(b, 4), p] for a, b, p in notes_in_seconds(parts, f["tempo"])
                              if a < seconds]
    else:
        from sonodiff.data.corpus.sfx import augment, render_sfx

        audio, asr, f = render_sfx(f, seconds, sr, rng, cfg.get("soundfont"))
    audio = np.asarray(audio, dtype=np.float32)
    if asr != sr:
        audio = resample(torch.from_numpy(audio)[None], asr, sr).numpy()[0]
    if d == "sfx":
        audio = augment(audio, sr, f["augmentation"], f["aug_params"], rng).astype(np.float32)
    source_seconds = round(len(audio) / sr, 4)
    audio, fit = C.fit_length(audio, int(round(seconds * sr)), sr)
    audio, lufs = C.normalise(audio, sr)
    if d == "sfx" and f["augmentation"] == "gain":
        drawn = f["aug_params"]["gain_db"]
        gain = C.gain_within_floor(audio, drawn)
        audio = (audio * 10 ** (gain / 20)).astype(np.float32)
        lufs = round(lufs + gain, 2)
        f["aug_params"] = {"gain_db": gain, "gain_db_drawn": drawn}
    problems = C.acceptance_problems(audio, sr)
    if problems:
        raise RuntimeError(f"{rel} ({spec['source']}: {' x '.join(map(str, spec['combo']))}) breaks the acceptance "
                           f"rule: {'; '.join(problems)}")
    save_audio(out / rel, torch.from_numpy(audio)[None], sr, subtype="PCM_16")
    cap = {"speech": T.speech_caption, "music": T.music_caption, "sfx": T.sfx_caption}[d]
    caption = cap(f, np.random.default_rng([spec["seed"], 2]))
    if d == "sfx" and f["kind"] == "recorded":
        f["file"] = f["file"].replace("/usr/share/", "")  # machine-independent: the package's share path
    rec = {"path": rel, "caption": caption, "domain": d, "split": spec["split"], "id": spec["id"],
           "source": spec["source"], "combo": spec["combo"], "seed": spec["seed"], "sample_rate": sr,
           "duration": seconds, "source_seconds": source_seconds, "fit": fit, "loudness_lufs": lufs}
    if d == "speech":
        rec.update(speaker=f["voice"], transcript=f["transcript"])
    elif d == "music":
        rec["label"] = f["instrument"]
    else:
        rec["label"] = f["label"]
    rec.update({k: v for k, v in f.items() if k not in rec})
    rec.update(extra)
    atomic_write_json(out / ".build" / "records" / f"{spec['id']}.json", rec, indent=1, sort_keys=True)
    return rec


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(args: tuple[dict, dict]) -> tuple[str, str | None]:
    spec, cfg = args
    try:
        render_clip(spec, cfg)
        return spec["id"], None
    except Exception as e:  # reported by the parent with the clip id; the build then fails
        return spec["id"], f"{type(e).__name__}: {e}"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _plan_hash(settings: dict, specs: list[dict]) -> str:
    return _digest({"settings": settings, "specs": specs})


def _grouped(items: list[Item]) -> str:
    """``name, name (reason); ...``: item names grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for i in items:
        by_reason.setdefault(i.reason, []).append(i.name)
    return "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())


def _report_sources(inv: Inventory, domains: tuple[str, ...], log) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Log what is missing or rejected (before building); returns ``(domain sources, skipped domains)``."""
    from sonodiff.data.corpus.plan import domain_sources

    have = domain_sources(inv, domains)
    skipped = {}
    missing = inv.missing(domains)
    for d in domains:
        srcs = [n for n, s in SOURCES.items() if s.domain == d]
        absent = [n for n in srcs if n not in have[d]]
        if not have[d]:
            skipped[d] = install_hint(absent)
            log(f"corpus: skipping domain {d!r}: none of its sources is installed ({', '.join(absent)}). "
                f"Install them with:\n  " + skipped[d].replace("\n", "\n  "))
    groups: dict[tuple[str, str], list[Item]] = {}
    for i in missing:
        groups.setdefault((i.source, i.kind), []).append(i)
    for (n, kind), gone in groups.items():
        d = SOURCES[n].domain if SOURCES[n].domain in domains else "sfx (gm-effects)"
        total = sum(i.source == n and i.kind == kind for i in inv.items)
        log(f"corpus: {d}: {n}: {len(gone)} of {total} {kind}(s) missing, not used: {_grouped(gone)}. "
            f"To add them:\n  " + install_commands(gone).replace("\n", "\n  "))
    rejected = inv.rejected(domains)
    if rejected:
        per = {n: sum(i.source == n for i in rejected) for n in dict.fromkeys(i.source for i in rejected)}
        log(f"corpus: sfx: {len(rejected)} recorded file(s) fail the content rule and are left out "
            f"({', '.join(f'{n}: {c}' for n, c in per.items())}; each listed with its reason in CORPUS.md), "
            f"e.g. {rejected[0].name}: {rejected[0].reason}")
    return have, skipped


def _settings_diff(old: dict, new: dict, old_items: list[str], new_items: list[str]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = [f"{k}: {old.get(k)!r} in the folder, {new.get(k)!r} asked for" for k in keys if k != "sources"]
    if "sources" in keys:
        gone = sorted(set(old_items) - set(new_items))
        added = sorted(set(new_items) - set(old_items))
        parts.append(f"sources: the source items differ ({len(gone)} used there are missing here"
                     + (f", e.g. {', '.join(gone[:5])}" if gone else "") + f"; {len(added)} here were not there"
                     + (f", e.g. {', '.join(added[:5])}" if added else "") + ")")
    return "; ".join(parts) or "the clip plan differs"


def build(cfg: BuildConfig, log=print) -> dict:
    """Build the corpus described by ``cfg``; returns a summary dict (counts, seconds taken, skipped, missing,
    rejected).

    Raises :class:`sources.MissingSourcesError` (a ``RuntimeError``) before rendering when ``cfg.strict``
    and source items are missing, ``RuntimeError`` if no requested domain has a source or clips fail to
    render (the others are kept; re-run to retry), and ``ValueError`` if ``cfg.out`` holds a build with
    other settings or sources.
    """
    from sonodiff.data.corpus.card import write_card
    from sonodiff.data.corpus.plan import make_plan

    t0 = time.time()
    out = Path(cfg.out)
    inv = detect_items(cfg.seconds, cfg.domains)
    missing = inv.missing(cfg.domains)
    if cfg.strict and missing:
        raise MissingSourcesError(
            f"corpus: strict build: {len(missing)} source item(s) missing: {_grouped(missing)}. Install them with:"
            f"\n  " + install_commands(missing).replace("\n", "\n  ") + "\n(or build without --strict to use "
            "what is present)")
    have, skipped = _report_sources(inv, cfg.domains, log)
    if not any(have.values()):
        raise RuntimeError("corpus: no source of any requested domain is installed; see the hints above")
    specs, info = make_plan(cfg.preset, cfg.seed, cfg.domains, cfg.seconds, inv)
    if cfg.limit is not None:
        specs = [s for s in specs if int(s["id"].rsplit("-", 1)[1]) < cfg.limit]
    sf2 = inv.soundfont()
    items = inv.fingerprint()
    settings = {"preset": cfg.preset, "seed": cfg.seed, "domains": list(cfg.domains), "limit": cfg.limit,
                "sample_rate": cfg.sample_rate, "seconds": cfg.seconds, "soundfont": sf2,
                "sources": _digest(items), "version": CORPUS_VERSION}
    h = _plan_hash(settings, specs)
    pfile = out / ".build" / "plan.json"
    if pfile.exists():
        old = json.loads(pfile.read_text())
        if old.get("hash") != h:
            raise ValueError(f"{out} holds a corpus build with other settings or sources ("
                             f"{_settings_diff(old.get('settings', {}), settings, old.get('items', []), items)}). "
                             "Use another folder, delete this one, or restore the sources it was built with.")
    rdir = out / ".build" / "records"
    rdir.mkdir(parents=True, exist_ok=True)
    for d in cfg.domains:
        (out / "clips" / d).mkdir(parents=True, exist_ok=True)
    if not pfile.exists():
        atomic_write_json(pfile, {"hash": h, "settings": settings, "items": items}, indent=1, sort_keys=True)
    # temporary files left by a killed build (sonodiff.utils.atomic names them ".<name>.XXXX<suffix>.tmp")
    for folder in [out, out / ".build", rdir, *(p for p in (out / "clips").iterdir() if p.is_dir())]:
        for stale in folder.iterdir():
            if stale.is_file() and is_temp_name(stale.name):
                stale.unlink()
    todo = [s for s in specs if not (rdir / f"{s['id']}.json").exists()]
    log(f"corpus: {len(specs)} clips planned ({info['counts']}), {len(specs) - len(todo)} already built, "
        f"rendering {len(todo)} with {cfg.workers} worker(s)")
    wcfg = {"out": str(out), "sample_rate": cfg.sample_rate, "seconds": cfg.seconds, "soundfont": sf2}
    errors = _run_all(todo, wcfg, cfg.workers, log)
    if errors:
        msg = "\n".join(f"  {i}: {e}" for i, e in errors[:20])
        raise RuntimeError(f"corpus: {len(errors)} clip(s) failed to render (re-run to retry):\n{msg}")
    records = [json.loads((rdir / f"{s['id']}.json").read_text()) for s in specs]
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    atomic_write_bytes(out / "metadata.jsonl", lines.encode("utf-8"))
    seconds_taken = round(time.time() - t0, 1)
    write_card(out / "CORPUS.md", settings, records, info, inv, skipped)
    log(f"corpus: wrote {len(records)} clips, {out / 'metadata.jsonl'} and {out / 'CORPUS.md'} "
        f"in {seconds_taken} s")
    return {"clips": len(records), "counts": info["counts"], "skipped": skipped, "seconds": seconds_taken,
            "rendered": len(todo), "hash": h, "missing": [i.name for i in missing],
            "rejected": [i.name for i in inv.rejected(cfg.domains)]}


def _run_all(todo: list[dict], wcfg: dict, workers: int, log) -> list[tuple[str, str]]:
    errors, done, t0 = [], 0, time.time()
    tasks = [(s, wcfg) for s in todo]

    def note(res):
        nonlocal done
        done += 1
        if res[1] is not None:
            errors.append(res)
        if done % 200 == 0 or done == len(tasks):
            log(f"corpus: {done}/{len(tasks)} rendered ({time.time() - t0:.0f} s)")

    if workers == 1 or len(tasks) <= 1:
        _init_worker()
        for t in tasks:
            note(_work(t))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as ex:
            for res in ex.map(_work, tasks, chunksize=4):
                note(res)
    return errors


def settings_of(cfg: BuildConfig) -> dict:
    """The BuildConfig as a plain dict (for logs)."""
    return asdict(cfg)
