"""``sonodiff data inspect``: what a dataset folder holds and what is wrong with it."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from sonodiff.data.checks import DEFAULT_CHECK, BadAudio, CheckConfig, read_checked
from sonodiff.data.layouts import scan

__all__ = ["DURATION_BINS", "format_inspection", "inspect_dataset"]

DURATION_BINS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, math.inf)
_WORD = re.compile(r"[a-z0-9']+")


def inspect_dataset(root: str | os.PathLike, layout: str = "folder", full: bool = True,
                    check: CheckConfig = DEFAULT_CHECK, layout_options: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Statistics of a dataset as a JSON-able dict. ``full=True`` decodes every file and runs the bad-file
    checks of :mod:`sonodiff.data.checks`; ``full=False`` reads headers only (fast; finds unreadable,
    zero-length and truncated-WAV files, not silent/clipped/NaN ones)."""
    import soundfile as sf

    from sonodiff.data.checks import wav_truncation

    root = Path(root)
    s = scan(root, layout, **(layout_options or {}))
    bad = [p.to_dict() for p in s.problems]
    durations, rates, chans, formats = [], Counter(), Counter(), Counter()
    good = []
    for it in s.items:
        p = root / it.path
        try:
            if full:
                audio, sr = read_checked(p, check)
                c, t = audio.shape
            else:
                if p.stat().st_size == 0:
                    raise BadAudio("zero_length", "file is 0 bytes")
                try:
                    info = sf.info(str(p))
                except (RuntimeError, OSError, ValueError) as e:
                    raise BadAudio("unreadable", str(e)) from None
                if info.frames == 0:
                    raise BadAudio("zero_length", "header holds 0 samples")
                if p.suffix.lower() == ".wav" and (msg := wav_truncation(p)):
                    raise BadAudio("truncated", msg)
                sr, c, t = info.samplerate, info.channels, info.frames
        except BadAudio as e:
            bad.append({"key": it.key, "path": it.path, "reason": e.reason, "detail": e.detail})
            continue
        good.append(it)
        durations.append(t / sr)
        rates[sr] += 1
        chans[c] += 1
        formats[p.suffix.lower()] += 1
    hist = []
    for lo, hi in itertools.pairwise(DURATION_BINS):
        hist.append({"from_s": lo, "to_s": hi, "count": sum(lo <= d < hi for d in durations)})
    caps = [it.caption for it in good if it.caption]
    words = [_WORD.findall(c.lower()) for c in caps]
    vocab = Counter(w for ws in words for w in ws)
    lengths = [len(ws) for ws in words]
    return {
        "root": str(root), "layout": s.layout, "entries": len(s.items) + len(s.problems), "usable": len(good),
        "bad_count": len(bad), "total_duration_s": sum(durations),
        "duration_s": {"min": min(durations, default=0.0), "mean": sum(durations) / max(1, len(durations)),
                       "max": max(durations, default=0.0)},
        "duration_histogram": hist,
        "sample_rates": {str(k): v for k, v in sorted(rates.items())},
        "channels": {str(k): v for k, v in sorted(chans.items())},
        "formats": dict(sorted(formats.items())),
        "splits": dict(sorted(Counter(it.split for it in good).items())),
        "captions": {"count": len(caps), "missing": len(good) - len(caps),
                     "words_min": min(lengths, default=0), "words_mean": sum(lengths) / max(1, len(lengths)),
                     "words_max": max(lengths, default=0), "vocabulary": len(vocab),
                     "top_words": vocab.most_common(10)},
        "labels": dict(sorted(Counter(it.label for it in good if it.label is not None).items())),
        "speakers": len({it.speaker for it in good if it.speaker is not None}),
        "bad": bad,
        "bad_reasons": dict(sorted(Counter(b["reason"] for b in bad).items())),
    }


def format_inspection(r: dict[str, Any], max_bad: int = 50) -> str:
    """Human-readable text of :func:`inspect_dataset`'s result."""
    d = r["duration_s"]
    lines = [
        f"dataset {r['root']} ({r['layout']})",
        f"  entries {r['entries']}, usable {r['usable']}, bad {r['bad_count']}",
        (f"  total duration {r['total_duration_s']:.1f} s ({r['total_duration_s'] / 3600:.2f} h); per file "
         f"min {d['min']:.2f} / mean {d['mean']:.2f} / max {d['max']:.2f} s"),
        f"  sample rates {r['sample_rates']}; channels {r['channels']}; formats {r['formats']}",
        f"  splits {r['splits']}",
        "  duration histogram:",
    ]
    peak = max((h["count"] for h in r["duration_histogram"]), default=0) or 1
    for h in r["duration_histogram"]:
        hi = "inf" if math.isinf(h["to_s"]) else f"{h['to_s']:g}"
        lines.append(f"    [{h['from_s']:>4g}, {hi:>4}) s {h['count']:>7} {'#' * round(30 * h['count'] / peak)}")
    c = r["captions"]
    lines.append(f"  captions: {c['count']} ({c['missing']} missing); words min {c['words_min']} / mean "
                 f"{c['words_mean']:.1f} / max {c['words_max']}; vocabulary {c['vocabulary']}")
    if c["top_words"]:
        lines.append("    top words: " + ", ".join(f"{w} {n}" for w, n in c["top_words"]))
    if r["labels"]:
        counts = list(r["labels"].values())
        lines.append(f"  labels: {len(counts)} classes, {min(counts)}..{max(counts)} per class: {r['labels']}"
                     if len(counts) <= 20 else f"  labels: {len(counts)} classes, {min(counts)}..{max(counts)} "
                                               "per class")
    if r["speakers"]:
        lines.append(f"  speakers: {r['speakers']}")
    if r["bad"]:
        lines.append(f"  bad entries by reason: {r['bad_reasons']}")
        for b in r["bad"][:max_bad]:
            lines.append(f"    {b['path']}: {b['reason']} ({b['detail']})")
        if len(r["bad"]) > max_bad:
            lines.append(f"    ... and {len(r['bad']) - max_bad} more")
    return "\n".join(lines)
