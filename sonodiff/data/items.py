"""Dataset entries and the generic folder format.

A folder dataset is a directory of audio files (or images, for an image codec) (searched recursively; hidden files and folders such as
``.sonodiff_cache`` are ignored) described in one of three ways, tried in this order:

1. ``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` (header row); if both exist
   ``metadata.jsonl`` is used. Fields: ``path`` (relative to the folder, required), ``caption``, and
   optional ``label``, ``speaker``, ``transcript``, ``split``; any other field is kept in ``Item.meta``.
   A ``split`` value ("train", "valid", "test" or any other string such as "test_heldout") overrides
   the hash split. If any row has a caption field, every row must have a non-empty caption.
2. Sidecar captions: ``clip.wav`` + ``clip.txt``. If any sidecar exists, every clip needs one.
3. Class sub-folders: ``root/<label>/.../clip.wav`` gets ``label=<label>`` (first path component).

Rows that cannot be used are returned as :class:`Problem` (file and reason), never dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonodiff.audio.io import AUDIO_EXTENSIONS

__all__ = ["KNOWN_FIELDS", "Item", "Problem", "Scan", "hash_split", "scan_folder", "walk_files"]

KNOWN_FIELDS = ("path", "caption", "label", "speaker", "transcript", "split")


@dataclass(frozen=True)
class Item:
    """One dataset entry. ``key`` is unique in the dataset (usually ``path``); ``path`` is relative to the
    dataset root (POSIX separators); ``meta`` holds any extra fields as given."""

    key: str
    path: str
    split: str
    caption: str | None = None
    label: str | None = None
    speaker: str | None = None
    transcript: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": self.path, "split": self.split, "caption": self.caption,
                "label": self.label, "speaker": self.speaker, "transcript": self.transcript, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(**{k: d[k] for k in ("key", "path", "split", "caption", "label", "speaker", "transcript",
                                        "meta")})


@dataclass(frozen=True)
class Problem:
    """A dataset entry or file that is skipped: ``reason`` is a short code, ``detail`` says what was found."""

    key: str
    path: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Scan:
    """Result of reading a dataset's description: usable ``items`` and ``problems`` found on the way."""

    root: Path
    layout: str
    items: list[Item]
    problems: list[Problem]


def hash_split(key: str, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """Deterministic split from the SHA-1 of ``key`` (a relative path): ``u`` in [0, 1) from the hash; test
    if ``u < test_fraction``, valid if ``u >= 1 - valid_fraction``, else train. Stable across machines and
    runs; a file keeps its split when others are added or removed, and growing one fraction only moves
    files out of train."""
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"need fractions >= 0 summing below 1, got valid={valid_fraction}, test={test_fraction}")
    u = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    if u >= 1.0 - valid_fraction:
        return "valid"
    return "train"


def walk_files(root: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[str]:
    """Relative POSIX paths of the files under ``root`` whose suffix is one of ``extensions`` (audio by default;
    an image codec's data set passes image suffixes), recursive, sorted, hidden entries skipped."""
    out = []
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, base)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(tuple(extensions)):
                out.append(prefix + name)
    return sorted(out)


def _clean(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _read_rows(path: Path) -> tuple[list[tuple[int, dict | None, str]], bool]:
    """Rows as (line number, dict or None if malformed, error) and whether a caption field exists."""
    rows: list[tuple[int, dict | None, str]] = []
    has_caption = False
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
                except (ValueError, TypeError) as e:
                    rows.append((n, None, f"line {n}: {e}"))
                    continue
                has_caption |= "caption" in obj
                rows.append((n, obj, ""))
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"{path}: header {reader.fieldnames} has no 'path' column; a folder dataset's "
                                 "metadata.csv needs one (LJ Speech's '|' file: use layout 'ljspeech')")
            has_caption = "caption" in reader.fieldnames
            for n, row in enumerate(reader, 2):
                rows.append((n, {k: v for k, v in row.items() if k is not None}, ""))
    return rows, has_caption


def scan_folder(root: str | os.PathLike, valid_fraction: float = 0.05, test_fraction: float = 0.05,
                require_captions: bool = False, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> Scan:
    """Read a folder dataset (see the module docstring). ``require_captions``: every item needs a caption
    even when the folder declares none. ``extensions``: the file suffixes searched for when there is no metadata
    file (audio by default; the data cache passes its codec's, e.g. images); a metadata file's rows are taken as
    listed, and a file the codec cannot read is then reported by the cache."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a directory")
    items: list[Item] = []
    problems: list[Problem] = []
    meta_file = next((root / n for n in ("metadata.jsonl", "metadata.csv") if (root / n).exists()), None)
    if meta_file is not None:
        rows, captions_expected = _read_rows(meta_file)
        seen: set[str] = set()
        for n, row, err in rows:
            if row is None:
                problems.append(Problem(f"{meta_file.name}:{n}", meta_file.name, "bad_metadata", err))
                continue
            rel = _clean(row.get("path"))
            if rel is None:
                problems.append(Problem(f"{meta_file.name}:{n}", meta_file.name, "bad_metadata",
                                        f"line {n}: no 'path'"))
                continue
            rel = Path(rel).as_posix()
            if rel in seen:
                problems.append(Problem(rel, rel, "bad_metadata", f"line {n}: duplicate path"))
                continue
            seen.add(rel)
            extra = {k: v for k, v in row.items() if k not in KNOWN_FIELDS}
            item = Item(key=rel, path=rel, split=_clean(row.get("split")) or hash_split(rel, valid_fraction,
                                                                                         test_fraction),
                        caption=_clean(row.get("caption")), label=_clean(row.get("label")),
                        speaker=_clean(row.get("speaker")), transcript=_clean(row.get("transcript")), meta=extra)
            items.append(item)
        layout = f"folder ({meta_file.name})"
    else:
        paths = walk_files(root, extensions)
        sidecars = {p: root / Path(p).with_suffix(".txt") for p in paths}
        captions_expected = any(s.exists() for s in sidecars.values())
        for rel in paths:
            cap = sidecars[rel].read_text(encoding="utf-8").strip() if sidecars[rel].exists() else None
            parts = Path(rel).parts
            items.append(Item(key=rel, path=rel, split=hash_split(rel, valid_fraction, test_fraction),
                              caption=cap or None, label=parts[0] if len(parts) > 1 else None))
        layout = "folder (sidecar .txt)" if captions_expected else "folder (class sub-folders)"
    return finish_scan(root, layout, items, problems, captions_expected or require_captions)


def finish_scan(root: Path, layout: str, items: list[Item], problems: list[Problem],
                captions_expected: bool) -> Scan:
    """Move items whose file is missing, or whose caption is missing when captions are expected, to
    ``problems``."""
    good = []
    base = str(root)
    for it in items:
        if not os.path.isfile(os.path.join(base, it.path)):
            problems.append(Problem(it.key, it.path, "missing_file", f"{root / it.path} does not exist"))
        elif captions_expected and not it.caption:
            problems.append(Problem(it.key, it.path, "missing_caption", "entry has no caption"))
        else:
            good.append(it)
    return Scan(root, layout, good, problems)
