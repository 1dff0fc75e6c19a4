"""Standard dataset layouts users already have on disk, read into :class:`~sonodiff.data.items.Item` lists.

- ``folder``: the generic folder format (:func:`sonodiff.data.items.scan_folder`).
- ``ljspeech``: LJ Speech 1.1 (Ito & Johnson 2017): ``metadata.csv`` with ``id|transcript|normalized``
  and ``wavs/<id>.wav``; caption and transcript = the normalised transcript (raw text in ``meta``),
  speaker "LJ"; hash split (the corpus has no official split).
- ``esc50``: ESC-50 (Piczak 2015): ``meta/esc50.csv`` (filename, fold, target, category, esc10, ...)
  and ``audio/<filename>``; label = category, caption = category with spaces; fold ``test_fold`` (5 by
  default) is "test", the other four folds "train" (ESC-50 is meant for 5-fold cross-validation).
- ``audiocaps``: AudioCaps (Kim et al. 2019): ``train.csv``, ``val.csv``, ``test.csv`` with
  ``audiocap_id, youtube_id, start_time, caption`` (at the root or in ``csv/`` or ``dataset/``) and the
  clips anywhere below the root, named ``<audiocap_id>``, ``<youtube_id>``, ``<youtube_id>_<start_time>``
  or ``Y<youtube_id>`` plus an audio extension. Every row is one item (val/test clips have five captions,
  hence five items); clips not found are reported as ``missing_file``.
- ``fsdd``: Free Spoken Digit Dataset: ``recordings/{digit}_{speaker}_{take}.wav`` (or the files at the
  root); label = digit, speaker, transcript = the digit's English word, caption "spoken digit <word>";
  official split: takes 0-4 are "test", the rest "train".
"""

from __future__ import annotations

import csv
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path

from sonodiff.data.items import Item, Problem, Scan, finish_scan, hash_split, scan_folder, walk_files

__all__ = ["DIGIT_WORDS", "LAYOUTS", "scan", "scan_audiocaps", "scan_esc50", "scan_fsdd", "scan_ljspeech"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a directory")
    return root


def scan_ljspeech(root: str | os.PathLike, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> Scan:
    root = _root(root)
    meta = root / "metadata.csv"
    if not meta.exists():
        raise ValueError(f"{root} is not LJ Speech: {meta} is missing")
    items, problems = [], []
    with open(meta, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("|")
            if len(parts) != 3 or not parts[0]:
                problems.append(Problem(f"metadata.csv:{n}", "metadata.csv", "bad_metadata",
                                        f"line {n}: expected 'id|transcript|normalized transcript'"))
                continue
            uid, raw, norm = parts
            rel = f"wavs/{uid}.wav"
            text = norm.strip() or None
            items.append(Item(key=uid, path=rel, split=hash_split(rel, valid_fraction, test_fraction),
                              caption=text, transcript=text, speaker="LJ", meta={"raw_transcript": raw}))
    return finish_scan(root, "ljspeech", items, problems, captions_expected=True)


def scan_esc50(root: str | os.PathLike, test_fold: int = 5) -> Scan:
    root = _root(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.exists():
        raise ValueError(f"{root} is not ESC-50: {meta} is missing")
    if test_fold not in range(1, 6):
        raise ValueError(f"ESC-50 test_fold must be 1..5, got {test_fold}")
    items, problems = [], []
    with open(meta, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            try:
                fold = int(row["fold"])
                name, category = row["filename"], row["category"]
            except (KeyError, ValueError, TypeError) as e:
                problems.append(Problem(f"esc50.csv:{n}", "meta/esc50.csv", "bad_metadata", f"line {n}: {e!r}"))
                continue
            extra = {k: v for k, v in row.items() if k not in ("filename", "category")}
            extra["fold"] = fold
            items.append(Item(key=name, path=f"audio/{name}", split="test" if fold == test_fold else "train",
                              caption=category.replace("_", " "), label=category, meta=extra))
    return finish_scan(root, "esc50", items, problems, captions_expected=True)


_AUDIOCAPS_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def scan_audiocaps(root: str | os.PathLike) -> Scan:
    root = _root(root)
    csvs = {}
    for sub in ("", "csv", "dataset"):
        for name in _AUDIOCAPS_SPLITS:
            p = root / sub / f"{name}.csv"
            if p.exists() and name not in csvs:
                csvs[name] = p
    if not csvs:
        raise ValueError(f"{root} is not AudioCaps: no train.csv/val.csv/test.csv at the root, csv/ or dataset/")
    by_stem: dict[str, str] = {}
    for rel in walk_files(root):
        by_stem.setdefault(Path(rel).stem, rel)
    items, problems = [], []
    for name, path in csvs.items():
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                try:
                    cap_id, yt, start = row["audiocap_id"], row["youtube_id"], row["start_time"]
                except KeyError as e:
                    problems.append(Problem(f"{path.name}:{n}", path.name, "bad_metadata", f"line {n}: no {e}"))
                    continue
                start_s = str(int(float(start))) if start not in (None, "") else ""
                candidates = [cap_id, yt, f"{yt}_{start_s}", f"{yt}_{start}", f"Y{yt}", f"Y{yt}_{start_s}"]
                rel = next((by_stem[c] for c in candidates if c in by_stem), None)
                if rel is None:
                    problems.append(Problem(cap_id, f"{yt}.wav", "missing_file",
                                            f"no clip named {candidates[:3]} under {root}"))
                    continue
                extra = {k: v for k, v in row.items() if k not in ("caption",)}
                items.append(Item(key=cap_id, path=rel, split=_AUDIOCAPS_SPLITS[name],
                                  caption=(row.get("caption") or "").strip() or None, meta=extra))
    return finish_scan(root, "audiocaps", items, problems, captions_expected=True)


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


def scan_fsdd(root: str | os.PathLike) -> Scan:
    root = _root(root)
    base = root / "recordings" if (root / "recordings").is_dir() else root
    items, problems = [], []
    prefix = "recordings/" if base != root else ""
    for rel in walk_files(base):
        rel_root = prefix + rel
        m = _FSDD_NAME.match(rel.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        if m is None:
            problems.append(Problem(rel_root, rel_root, "bad_metadata",
                                    "file name is not {digit}_{speaker}_{take}"))
            continue
        digit, speaker, take = m.group(1), m.group(2), int(m.group(3))
        word = DIGIT_WORDS[int(digit)]
        items.append(Item(key=rel_root, path=rel_root, split="test" if take < 5 else "train",
                          caption=f"spoken digit {word}", label=digit, speaker=speaker, transcript=word,
                          meta={"take": take}))
    if not items and not problems:
        raise ValueError(f"{root} is not FSDD: no {{digit}}_{{speaker}}_{{take}}.wav files in it or recordings/")
    return finish_scan(root, "fsdd", items, problems, captions_expected=True)


LAYOUTS: dict[str, Callable[..., Scan]] = {
    "folder": scan_folder,
    "ljspeech": scan_ljspeech,
    "esc50": scan_esc50,
    "audiocaps": scan_audiocaps,
    "fsdd": scan_fsdd,
}


def scan(root: str | os.PathLike, layout: str = "folder", **options) -> Scan:
    """Read dataset ``root`` in the named layout (a key of :data:`LAYOUTS`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; valid: {sorted(LAYOUTS)}")
    fn = LAYOUTS[layout]
    valid = [p for p in inspect.signature(fn).parameters if p != "root"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for layout {layout!r}; valid: {valid}")
    return fn(root, **options)
