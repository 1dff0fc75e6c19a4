"""Shape helpers shared by the core: one ``bcast`` for per-example coefficients."""

from __future__ import annotations

from torch import Tensor

__all__ = ["bcast"]


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example ``[B]`` tensor to broadcast against ``like`` ``[B, ...]`` (keeps v's dtype)."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))
