"""Build the corpus: detect sources, plan, render clips in worker processes, write metadata and the card.

Layout of ``OUT``::

    OUT/clips/<domain>/<id>.wav      mono PCM-16 clips, fixed rate and length
    OUT/clips/music/<id>.mid         the MIDI each music clip was rendered from
    OUT/metadata.jsonl               one JSON object per clip (folder-dataset format)
    OUT/CORPUS.md                    the card: sources, licences, counts, durations, seed, version
    OUT/.build/plan.json             the settings and plan hash (a resumed build must match it)
    OUT/.build/records/<id>.json     per-clip records; metadata.jsonl is assembled from them at the end

Every file is written to a temporary name and renamed, so a killed build never leaves a half clip;
a re-run renders only the clips without a record. Each clip depends only on its spec (its own seed),
so the output is byte-identical for a seed whatever the number of workers or interruptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sonodiff.data.corpus.sources import DOMAINS, SOURCES, detect, install_hint, soundfont_path

__all__ = ["CORPUS_VERSION", "PEAK_LIMIT", "TARGET_LUFS", "BuildConfig", "build", "render_clip"]

CORPUS_VERSION = "1"
TARGET_LUFS = -23.0  # EBU R 128
PEAK_LIMIT = 0.891  # -1 dBFS: clips whose peak would exceed it at TARGET_LUFS are turned down instead


@dataclass(frozen=True)
class BuildConfig:
    """Settings of one build. ``limit``: keep only the first ``limit`` clips of each domain (plan order)."""

    out: str
    preset: str = "small"
    seed: int = 0
    domains: tuple[str, ...] = DOMAINS
    sample_rate: int = 16000
    seconds: float = 4.0
    workers: int = 1
    limit: int | None = None

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


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fit(audio: np.ndarray, n: int, sr: int) -> tuple[np.ndarray, str]:
    """Trim (with a 10 ms fade-out) or zero-pad ``audio [T]`` to ``n`` samples."""
    if len(audio) > n:
        out = audio[:n].copy()
        k = min(n, int(0.01 * sr))
        out[n - k:] *= np.linspace(1.0, 0.0, k, dtype=out.dtype)
        return out, "trimmed"
    if len(audio) < n:
        return np.pad(audio, (0, n - len(audio))), "padded"
    return audio, "exact"


def _normalise(x: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Loudness-normalise ``x [T]`` to TARGET_LUFS (ITU-R BS.1770-4), turned down if its peak would
    exceed PEAK_LIMIT; returns the audio and its measured loudness in LUFS."""
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


def render_clip(spec: dict, cfg: dict) -> dict:
    """Render one clip spec into ``cfg["out"]`` (wav, record; midi for music) and return its record."""
    import torch

    from sonodiff.audio.io import resample, save_audio, write_json_atomic
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
        _atomic_bytes(out / mid_rel, midi)
        extra["midi"] = mid_rel
        if f["kind"] == "melody":
            extra["notes"] = [[round(a, 4), round(b, 4), p] for a, b, p in notes_in_seconds(parts, f["tempo"])
                              if a < seconds]
    else:
        from sonodiff.data.corpus.sfx import augment, render_sfx

        audio, asr = render_sfx(f, seconds, sr, rng, cfg.get("soundfont"))
    audio = np.asarray(audio, dtype=np.float32)
    if asr != sr:
        audio = resample(torch.from_numpy(audio)[None], asr, sr).numpy()[0]
    if d == "sfx":
        audio = augment(audio, sr, f["augmentation"], f["aug_params"], rng).astype(np.float32)
    source_seconds = round(len(audio) / sr, 4)
    audio, fit = _fit(audio, int(round(seconds * sr)), sr)
    audio, lufs = _normalise(audio, sr)
    if d == "sfx" and f["augmentation"] == "gain":
        audio = (audio * 10 ** (f["aug_params"]["gain_db"] / 20)).astype(np.float32)
        lufs = round(lufs + f["aug_params"]["gain_db"], 2)
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
    write_json_atomic(out / ".build" / "records" / f"{spec['id']}.json", rec)
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


def _plan_hash(settings: dict, specs: list[dict]) -> str:
    blob = json.dumps({"settings": settings, "specs": specs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build(cfg: BuildConfig, log=print) -> dict:
    """Build the corpus described by ``cfg``; returns a summary dict (counts, seconds taken, skipped).

    Raises ``RuntimeError`` if clips fail to render (the others are kept; re-run to retry) and
    ``ValueError`` if ``cfg.out`` holds a build with other settings.
    """
    from sonodiff.audio.io import write_json_atomic
    from sonodiff.data.corpus.card import write_card
    from sonodiff.data.corpus.plan import make_plan

    t0 = time.time()
    out = Path(cfg.out)
    present = detect()
    domain_sources, skipped = {}, {}
    for d in cfg.domains:
        srcs = [n for n, s in SOURCES.items() if s.domain == d]
        have = [n for n in srcs if present[n]]
        missing = [n for n in srcs if not present[n]]
        domain_sources[d] = have
        if not have:
            skipped[d] = install_hint(missing)
            log(f"corpus: skipping domain {d!r}: none of its sources is installed ({', '.join(missing)}). "
                f"Install them with:\n  " + skipped[d].replace("\n", "\n  "))
        elif missing:
            log(f"corpus: {d}: not using {', '.join(missing)} (not installed); to add them:\n  "
                + install_hint(missing).replace("\n", "\n  "))
    if not any(domain_sources.values()):
        raise RuntimeError("corpus: no source of any requested domain is installed; see the hints above")
    specs, info = make_plan(cfg.preset, cfg.seed, cfg.domains, cfg.seconds, present, domain_sources)
    if cfg.limit is not None:
        specs = [s for s in specs if int(s["id"].rsplit("-", 1)[1]) < cfg.limit]
    sf2 = soundfont_path()
    settings = {"preset": cfg.preset, "seed": cfg.seed, "domains": list(cfg.domains), "limit": cfg.limit,
                "sample_rate": cfg.sample_rate, "seconds": cfg.seconds, "soundfont": sf2,
                "version": CORPUS_VERSION}
    h = _plan_hash(settings, specs)
    (out / ".build" / "records").mkdir(parents=True, exist_ok=True)
    for d in cfg.domains:
        (out / "clips" / d).mkdir(parents=True, exist_ok=True)
    pfile = out / ".build" / "plan.json"
    if pfile.exists():
        old = json.loads(pfile.read_text())
        if old.get("hash") != h:
            raise ValueError(f"{out} holds a corpus build with other settings ({old.get('settings')}); "
                             f"asked for {settings}. Use another folder or delete this one.")
    else:
        write_json_atomic(pfile, {"hash": h, "settings": settings})
    rdir = out / ".build" / "records"
    for stale in [*out.glob("clips/*/.*.tmp"), *rdir.glob(".*.tmp")]:  # left by a killed build
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
    _atomic_bytes(out / "metadata.jsonl", lines.encode("utf-8"))
    seconds_taken = round(time.time() - t0, 1)
    write_card(out / "CORPUS.md", settings, records, info, present, skipped)
    log(f"corpus: wrote {len(records)} clips, {out / 'metadata.jsonl'} and {out / 'CORPUS.md'} "
        f"in {seconds_taken} s")
    return {"clips": len(records), "counts": info["counts"], "skipped": skipped, "seconds": seconds_taken,
            "rendered": len(todo), "hash": h}


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
