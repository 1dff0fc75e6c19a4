"""Helpers for modules: frozen pretrained encoders held outside the module tree; loading saved weights."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

__all__ = ["deepcopy_sharing", "load_weights"]


def load_weights(module, path: str | Path, against: str) -> None:
    """Load the safetensors file ``path`` into ``module`` (every key must match). A missing file is a
    ``FileNotFoundError``; a corrupt one, or keys that do not fit ``module``, a ``ValueError`` naming the file and
    ``against`` (what defines the architecture, e.g. the directory's config.json)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is corrupt or not a safetensors file ({e})") from None
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match {against}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def deepcopy_sharing(obj, memo: dict, shared: Iterable) -> object:
    """``copy.deepcopy(obj)`` (for use in ``obj.__deepcopy__``) that shares the objects in ``shared`` instead of
    copying them: an EMA copy of a model reuses its frozen encoders rather than holding a second copy."""
    for s in shared:
        memo[id(s)] = s
    cls = obj.__class__
    new = cls.__new__(cls)
    memo[id(obj)] = new
    for k, v in obj.__dict__.items():
        new.__dict__[k] = copy.deepcopy(v, memo)
    return new
