"""The incremental feature cache: counts, exactly-one re-encode, deletions, equivalence with direct
encoding, worker-count invariance, and surviving a SIGKILL part-way."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sonodiff.audio.codecs import load_codec, make_codec
from sonodiff.audio.io import load_audio
from sonodiff.data.cache import prepare
from sonodiff.data.datasets import CachedDataset

REPO = Path(__file__).resolve().parents[2]


def make_dataset(root, make_tone, n=8):
    for i in range(n):
        sr = 8000 if i % 2 else 16000
        make_tone(root / f"d{i % 3}" / f"clip{i:03d}.wav", f=200 + 50 * i, sr=sr, seconds=0.3 + 0.05 * i,
                  channels=1 + i % 2, noise=0.05, seed=i)
        (root / f"d{i % 3}" / f"clip{i:03d}.txt").write_text(f"tone number {i}")
    return root


def item_files(fdir):
    return sorted((Path(fdir) / "items").rglob("*.safetensors"))


def snapshot(fdir):
    """Everything that defines a finished cache: index entries, features and codec statistics."""
    index = json.loads((Path(fdir) / "index.json").read_text())["items"]
    feats = {k: load_file(str(Path(fdir) / "items" / e["hash"][:2] / f"{e['hash']}.safetensors"))["features"]
             for k, e in index.items()}
    codec = load_codec(Path(fdir) / "codec")
    strip = {k: {f: v for f, v in e.items() if f not in ("mtime_ns",)} for k, e in index.items()}
    return strip, feats, {k: v.clone() for k, v in codec.stats().items()}


def assert_same_cache(a, b):
    ia, fa, sa = snapshot(a)
    ib, fb, sb = snapshot(b)
    assert ia == ib
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_incremental_counts_change_delete_add(tmp_path, make_tone):
    root = make_dataset(tmp_path / "ds", make_tone, n=8)
    codec = make_codec("mel", n_mels=32)
    r = prepare(root, codec, workers=1)
    assert (r.added, r.changed, r.removed, r.unchanged, r.skipped, r.encoded, r.total) == (8, 0, 0, 0, 0, 8, 8)
    fdir = Path(r.cache_dir)
    assert fdir.parent == root / ".sonodiff_cache" and len(item_files(fdir)) == 8
    r = prepare(root, codec, workers=1)
    assert (r.added, r.changed, r.removed, r.unchanged, r.encoded) == (0, 0, 0, 8, 0)

    # change 1 of 8 files (same size, so only the content hash can tell)
    target = root / "d1" / "clip004.wav"
    key = "d1/clip004.wav"
    before = json.loads((fdir / "index.json").read_text())["items"][key]["hash"]
    make_tone(target, f=3000, sr=16000, seconds=0.5, channels=1, noise=0.05, seed=4)
    r = prepare(root, codec, workers=1)
    assert (r.added, r.changed, r.removed, r.unchanged, r.encoded) == (0, 1, 0, 7, 1)
    after = json.loads((fdir / "index.json").read_text())["items"][key]["hash"]
    assert after != before and len(item_files(fdir)) == 8  # the old features were dropped

    # a touched but identical file is re-hashed, found unchanged, and not re-encoded
    os.utime(root / "d0" / "clip000.wav", ns=(time.time_ns(), time.time_ns()))
    r = prepare(root, codec, workers=1)
    assert (r.changed, r.unchanged, r.encoded) == (0, 8, 0)

    # delete one, add one (whose content duplicates another file: encoded zero times)
    (root / "d2" / "clip002.wav").unlink()
    (root / "d2" / "clip002.txt").unlink()
    shutil.copy(root / "d0" / "clip003.wav", root / "d0" / "copy.wav")
    (root / "d0" / "copy.txt").write_text("a copy")
    r = prepare(root, codec, workers=1)
    assert (r.added, r.changed, r.removed, r.unchanged, r.encoded, r.total) == (1, 0, 1, 7, 0, 8)
    index = json.loads((fdir / "index.json").read_text())["items"]
    assert "d2/clip002.wav" not in index and index["d0/copy.wav"]["hash"] == index["d0/clip003.wav"]["hash"]
    assert len(item_files(fdir)) == 7  # 8 entries, 7 distinct contents

    # the incrementally maintained cache equals one built from scratch (statistics included)
    fresh = prepare(root, codec, cache_dir=tmp_path / "fresh", workers=1)
    assert_same_cache(fdir, fresh.cache_dir)


def test_cached_features_equal_direct_encoding_and_workers_do_not_matter(tmp_path, make_tone):
    root = make_dataset(tmp_path / "ds", make_tone, n=34)  # >= 16 x workers: the process pool is used
    codec = make_codec("mel", n_mels=24, sample_rate=16000)
    r1 = prepare(root, codec, cache_dir=tmp_path / "c1", workers=1)
    r2 = prepare(root, codec, cache_dir=tmp_path / "c2", workers=2)
    assert_same_cache(r1.cache_dir, r2.cache_dir)
    ds = CachedDataset(tmp_path / "c1")
    fitted = load_codec(Path(r1.cache_dir) / "codec")
    assert fitted.is_fitted and len(ds) == 34
    for i in range(0, len(ds), 5):
        ex = ds[i]
        audio, _ = load_audio(root / ex["key"], 16000, "mono")
        direct = fitted.encode(audio[None])[0]
        assert torch.allclose(ex["x"], direct, atol=1e-5) and ex["caption"].startswith("tone number")
    # the fitted statistics are the per-bin moments of the train split's active frames: each frame's loudest
    # bin at least 40 dB above the floor and within 60 dB of its item's loudest frame (distinct contents once)
    train = CachedDataset(tmp_path / "c1", split="train")
    assert 0 < len(train) < len(ds)
    seen, kept = set(), []
    for i in range(len(train)):
        if train.entries[i]["hash"] in seen:
            continue
        seen.add(train.entries[i]["hash"])
        f = train.features(i)[0].double()  # [n_mels, frames], natural log of magnitude
        db = f.amax(0) * 20 / math.log(10)
        floor = math.log(codec.config.log_floor) * 20 / math.log(10)
        kept.append(f[:, (db >= floor + 40) & (db >= db.max() - 60)])
    frames = torch.cat(kept, dim=-1)
    assert torch.allclose(fitted.mean, frames.mean(-1), atol=1e-9)
    assert torch.allclose(fitted.std, frames.std(-1, unbiased=False), atol=1e-9)
    seg = CachedDataset(tmp_path / "c2", segment=16, crop="random", seed=1)
    assert seg[0]["x"].shape == (1, 24, 16)
    # a different codec config gets its own feature folder beside the first
    r3 = prepare(root, make_codec("mel", n_mels=16), cache_dir=tmp_path / "c1", workers=1)
    assert r3.cache_dir != r1.cache_dir and r3.encoded == 34
    with pytest.raises(ValueError, match="2 prepared feature folders"):
        CachedDataset(tmp_path / "c1")


def test_waveform_codec_cache(tmp_path, make_tone):
    root = make_dataset(tmp_path / "ds", make_tone, n=4)
    r = prepare(root, make_codec("waveform", sample_rate=8000, channels=2, target_std=0.5), workers=1)
    ds = CachedDataset(r.cache_dir, segment=4000, crop="start")
    train = CachedDataset(r.cache_dir, split="train")  # the scale is fitted on the train split (no silence here)
    xs = torch.cat([train[i]["x"].flatten() for i in range(len(train))])
    assert len(train) > 0 and abs(float(xs.double().std(unbiased=False)) - 0.5) < 1e-3
    assert ds[0]["x"].shape == (2, 4000)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import sonodiff.data.cache as cache
    from sonodiff.audio.codecs import make_codec

    _orig = cache._encode_one

    def slow(task):
        time.sleep(0.08)
        return _orig(task)

    cache._encode_one = slow
    cache.prepare(sys.argv[1], make_codec("mel", n_mels=32), workers=int(sys.argv[2]))
    print("FINISHED")
""")


@pytest.mark.parametrize("workers", [2])
def test_sigkill_during_prepare_leaves_a_cache_the_next_run_completes(tmp_path, make_tone, workers):
    root = make_dataset(tmp_path / "ds", make_tone, n=40)
    codec = make_codec("mel", n_mels=32)
    r = prepare(root, codec, workers=1)
    fdir = Path(r.cache_dir)
    old_index = (fdir / "index.json").read_text()
    # change 36 of the 40 files (enough for prepare to start worker processes), then kill a prepare
    # part-way through re-encoding them
    for i in range(36):
        make_tone(root / f"d{i % 3}" / f"clip{i:03d}.wav", f=900 + 40 * i, sr=16000, seconds=0.4, noise=0.05,
                  seed=100 + i)
    script = tmp_path / "slow_prepare.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(item_files(fdir)) < 40 + 8 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, f"prepare ended before it could be killed: {proc.communicate()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    finally:
        proc.wait(timeout=30)
    time.sleep(0.2)
    done_before_kill = len(item_files(fdir)) - 40
    assert 8 <= done_before_kill < 36
    # nothing is corrupt: the old index is untouched and every feature file present loads
    assert (fdir / "index.json").read_text() == old_index
    for p in item_files(fdir):
        assert load_file(str(p))["features"].ndim == 3
    assert len(CachedDataset(fdir)) == 40  # still usable (the previous state)
    # the next run finishes the job: only what was not yet encoded is encoded
    r = prepare(root, codec, workers=1)
    assert (r.changed, r.unchanged, r.added, r.removed) == (36, 4, 0, 0)
    assert r.encoded == 36 - done_before_kill
    assert not list(fdir.rglob("*.tmp")) and len(item_files(fdir)) == 40
    fresh = prepare(root, codec, cache_dir=tmp_path / "fresh", workers=1)
    assert_same_cache(fdir, fresh.cache_dir)


def test_unreadable_file_is_reported_not_fatal(tmp_path, make_tone, monkeypatch):
    from sonodiff.data import cache

    root = make_dataset(tmp_path / "ds", make_tone, n=3)
    real = cache.file_hash

    def no_permission(path):  # what a file without read permission does (tests may run as root)
        if str(path).endswith("clip000.wav"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(cache, "file_hash", no_permission)
    r = prepare(root, make_codec("mel", n_mels=16), workers=1)
    assert r.total == 2 and [(b["path"], b["reason"]) for b in r.bad] == [("d0/clip000.wav", "unreadable")]
    assert "Permission denied" in r.bad[0]["detail"]


def test_statistics_fall_back_to_all_items_without_the_fit_split(tmp_path, make_tone):
    root = make_dataset(tmp_path / "ds", make_tone, n=6)
    logs = []
    r = prepare(root, make_codec("mel", n_mels=16, sample_rate=16000), workers=1, fit_split="nonexistent",
                log=logs.append)
    index = json.loads((Path(r.cache_dir) / "index.json").read_text())
    assert index["stats_fitted_on"] == {"split": None, "items": 6}
    assert any("no item of split 'nonexistent'" in m and "fitted on all 6 items" in m for m in logs)
    r = prepare(root, make_codec("mel", n_mels=16, sample_rate=16000), workers=1)
    index = json.loads((Path(r.cache_dir) / "index.json").read_text())
    assert index["stats_fitted_on"]["split"] == "train" and index["stats_fitted_on"]["items"] > 0
