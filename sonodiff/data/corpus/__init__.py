"""The built-in corpus: real speech, music and sound effects with true captions, built offline.

``sonodiff corpus build OUT --preset small|medium|large --seed N`` renders clips from Debian and PyPI
sound sources (speech synthesizers, General MIDI soundfonts with music21 scores, recorded sample
packs, parametric sounds) with captions true by construction. See :mod:`.build` for the output layout,
:mod:`.plan` for splits, :mod:`.verify` for the quality checks. Heavy modules load lazily.
"""

from sonodiff.data.corpus.sources import DOMAINS, SOURCES, detect, detect_items, install_hint

__all__ = ["DOMAINS", "SOURCES", "BuildConfig", "build", "detect", "detect_items", "install_hint"]


def __getattr__(name):
    if name in ("BuildConfig", "build"):
        from sonodiff.data.corpus import build as _b

        return getattr(_b, name)
    raise AttributeError(f"module 'sonodiff.data.corpus' has no attribute {name!r}")
