"""Benchmark the data path: feature-cache throughput and data-loader throughput.

Stages (each row: seconds of audio handled, wall seconds, x real time = seconds_audio / wall_s, and
cpu_s = CPU seconds of this process and its workers, which shows how much a busy machine slowed it):
  cache_full         `prepare` from scratch (mel codec, 16 kHz, 80 bins; decode + checks + resample + STFT)
  cache_incr_1pct    after rewriting 1% of the files (x real time counts the whole dataset's audio)
  cache_noop         nothing changed
  load_cache         one epoch of CachedDataset (features read, normalised)
  load_decode        one epoch of FolderDataset + codec.encode (decode and featurise every file)

Data: the real FSDD (../shared/data/fsdd or $SONODIFF_SHARED_DATA/fsdd, copied to a temp dir so files can
be changed) or, if absent, synthetic 8 kHz tones. Timings are in-process (no interpreter start-up).

    python scripts/bench_data.py [--quick] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sonodiff.audio.codecs import make_codec
from sonodiff.data.cache import prepare
from sonodiff.data.datasets import CachedDataset, FolderDataset


def find_fsdd() -> Path | None:
    env = os.environ.get("SONODIFF_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    p = (base / "fsdd").resolve()
    return p if (p / "recordings").is_dir() else None


def make_data(dst: Path, n: int | None) -> tuple[str, str]:
    src = find_fsdd()
    if src is not None:
        files = sorted((src / "recordings").glob("*.wav"))
        if n is not None:
            files = files[:: max(1, len(files) // n)][:n]
        (dst / "recordings").mkdir(parents=True)
        for f in files:
            shutil.copy(f, dst / "recordings" / f.name)
        return "fsdd", f"FSDD ({len(files)} real recordings, 8 kHz)"
    n = n or 3000
    rng = np.random.default_rng(0)
    for i in range(n):
        sr = 8000
        t = np.arange(int(sr * rng.uniform(0.3, 0.7))) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.02 * rng.standard_normal(len(t))
        (dst / f"c{i // 100}").mkdir(parents=True, exist_ok=True)
        sf.write(str(dst / f"c{i // 100}" / f"{i:05d}.wav"), x.astype(np.float32), sr)
    return "folder", f"synthetic ({n} tones, 8 kHz; FSDD not found)"


def change_files(root: Path, fraction: float) -> int:
    files = sorted(p for p in root.rglob("*.wav") if ".sonodiff_cache" not in p.parts)
    picked = files[:: round(1 / fraction)]
    for p in picked:
        x, sr = sf.read(str(p), dtype="float32")
        sf.write(str(p), 0.9 * x, sr, subtype="PCM_16")
    return len(picked)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the cache's worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def row(stage, seconds_audio, wall_s, cpu_s):
    return {"stage": stage, "seconds_audio": round(seconds_audio, 2), "wall_s": round(wall_s, 4),
            "x_realtime": round(seconds_audio / wall_s, 1) if wall_s > 0 else float("inf"),
            "cpu_s": round(cpu_s, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="600 files instead of 3000 (< 1 minute)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        layout, desc = make_data(root, 600 if args.quick else None)
        codec = make_codec("mel")
        c0 = cpu_seconds()
        r = prepare(root, codec, layout=layout, workers=args.workers)
        total = r.total_seconds_audio
        rows.append(row("cache_full", r.seconds_audio, r.wall_s, cpu_seconds() - c0))
        n_changed = change_files(root, 0.01)
        c0 = cpu_seconds()
        r1 = prepare(root, codec, layout=layout, workers=args.workers)
        assert r1.changed == n_changed and r1.encoded == n_changed, (r1.changed, r1.encoded, n_changed)
        rows.append(row("cache_incr_1pct", total, r1.wall_s, cpu_seconds() - c0))
        c0 = cpu_seconds()
        r2 = prepare(root, codec, layout=layout, workers=args.workers)
        rows.append(row("cache_noop", total, r2.wall_s, cpu_seconds() - c0))

        ds = CachedDataset(r.cache_dir)
        c0, t0 = cpu_seconds(), time.perf_counter()
        n_frames = sum(ds[i]["x"].shape[-1] for i in range(len(ds)))
        rows.append(row("load_cache", total, time.perf_counter() - t0, cpu_seconds() - c0))
        assert n_frames > 0
        from sonodiff.audio.codecs import load_codec

        fitted = load_codec(Path(r.cache_dir) / "codec")
        fds = FolderDataset(root, sample_rate=16000, channels="mono", layout=layout)
        c0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(len(fds)):
            fitted.encode(fds[i]["x"][None])
        rows.append(row("load_decode", total, time.perf_counter() - t0, cpu_seconds() - c0))

    print(f"data: {desc}; {total:.1f} s of audio; workers={args.workers}; {n_changed} files changed for the "
          f"incremental run; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"| {'stage':<16}| {'seconds_audio':>13} | {'wall_s':>8} | {'x_realtime':>10} | {'cpu_s':>7} |")
    print(f"|{'-' * 17}|{'-' * 15}|{'-' * 10}|{'-' * 12}|{'-' * 9}|")
    for x in rows:
        print(f"| {x['stage']:<16}| {x['seconds_audio']:>13.1f} | {x['wall_s']:>8.3f} | {x['x_realtime']:>10.1f} | "
              f"{x['cpu_s']:>7.2f} |")
    full, incr = rows[0]["wall_s"], rows[1]["wall_s"]
    print(f"incremental (1%) / full wall time: {100 * incr / full:.1f}%  (goal <= 5%); "
          f"mel caching: {rows[0]['x_realtime']:.0f}x real time (goal >= 300x)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
