"""Helpers of the corpus tests: source requirements and file-tree digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sonodiff.data.corpus.sources import SOURCES, detect

# the sources CI installs (apt: see the report / scripts/apt-packages.txt); piper and music21 are pip extras
CI_SOURCES = ("espeak-ng", "flite", "festival", "fluidsynth", "sonic-pi-samples", "sound-icons",
              "sound-theme-freedesktop")
TINY = 3  # clips per domain of the fast builds


def require_sources(names=CI_SOURCES) -> dict[str, bool]:
    """Skip (naming the packages) when a source the test needs is genuinely absent on this machine."""
    present = detect()
    missing = [n for n in names if not present[n]]
    if missing:
        pkgs = sorted({p for n in missing for p in SOURCES[n].apt + SOURCES[n].pip})
        pytest.skip(f"corpus sources not installed here: {missing} (install: {' '.join(pkgs)})")
    return present


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` except temporary files."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".tmp"):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
