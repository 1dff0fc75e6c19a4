"""Helpers for modules that hold frozen pretrained encoders outside their module tree."""

from __future__ import annotations

import copy
from collections.abc import Iterable

__all__ = ["deepcopy_sharing"]


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
