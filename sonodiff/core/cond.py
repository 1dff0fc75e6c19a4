"""`Cond`: the typed conditioning container every denoiser takes.

Four routes by which conditioning enters a network (the stable-audio-tools taxonomy):

- ``tokens`` ``[B, L, D]`` with ``mask`` ``[B, L]`` (bool, True = real token): cross-attention.
- ``pooled`` ``[B, D]``: a global vector added to the noise-level embedding (class labels, durations,
  pooled text or CLAP embeddings).
- ``concat`` ``[B, C, ...]``: channels concatenated to the network input (inpainting masks and masked
  input, upsampler or vocoder conditioning); same spatial shape as ``x``.
- ``null`` ``[B]`` (bool): rows for which the network must use its *learned null embeddings* instead of
  ``tokens`` and ``pooled`` (classifier-free guidance). ``concat`` is structural and is never nulled.

A ``Cond`` is immutable; every method returns a new one. ``None`` fields are simply absent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Cond"]


@dataclass(frozen=True)
class Cond:
    tokens: Tensor | None = None
    mask: Tensor | None = None
    pooled: Tensor | None = None
    concat: Tensor | None = None
    null: Tensor | None = None

    def __post_init__(self) -> None:
        sizes = {f.name: getattr(self, f.name).shape[0] for f in fields(self) if getattr(self, f.name) is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Cond fields disagree on batch size: {sizes}; every field must share dim 0 (B)")
        if self.tokens is not None and self.tokens.ndim != 3:
            raise ValueError(f"Cond.tokens must be [B, L, D], got shape {tuple(self.tokens.shape)}")
        if self.mask is not None:
            if self.tokens is None:
                raise ValueError("Cond.mask given without Cond.tokens; the mask marks which tokens are real")
            if self.mask.shape != self.tokens.shape[:2]:
                raise ValueError(
                    f"Cond.mask must be [B, L] = {tuple(self.tokens.shape[:2])}, got {tuple(self.mask.shape)}"
                )
            if self.mask.dtype != torch.bool:
                raise ValueError(f"Cond.mask must be a bool tensor (True = real token), got {self.mask.dtype}")
        if self.pooled is not None and self.pooled.ndim != 2:
            raise ValueError(f"Cond.pooled must be [B, D], got shape {tuple(self.pooled.shape)}")
        if self.null is not None and (self.null.ndim != 1 or self.null.dtype != torch.bool):
            raise ValueError(f"Cond.null must be a bool tensor of shape [B], got {self.null.dtype} {tuple(self.null.shape)}")

    # ------------------------------------------------------------------ queries
    @property
    def batch_size(self) -> int | None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                return v.shape[0]
        return None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def null_mask(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """``[B]`` bool: which rows use the learned null embeddings (all False when ``null`` is absent)."""
        if self.null is None:
            return torch.zeros(batch_size, dtype=torch.bool, device=device)
        return self.null.to(device) if device is not None else self.null

    # ------------------------------------------------------------------ transforms
    def with_null(self, null: Tensor | bool = True) -> "Cond":
        """Mark rows as null. ``null`` is a bool or a ``[B]`` bool tensor; combined (OR) with any existing mark."""
        b = self.batch_size
        if b is None:
            raise ValueError("Cond.with_null() needs at least one tensor field to know the batch size")
        dev = next(getattr(self, f.name).device for f in fields(self) if getattr(self, f.name) is not None)
        if isinstance(null, bool):
            null = torch.full((b,), null, dtype=torch.bool, device=dev)
        if null.shape != (b,) or null.dtype != torch.bool:
            raise ValueError(f"null must be a bool tensor of shape [{b}], got {null.dtype} {tuple(null.shape)}")
        if self.null is not None:
            null = null | self.null
        return replace(self, null=null)

    def null_all(self) -> "Cond":
        """The unconditional counterpart for classifier-free guidance: every row null, shapes unchanged."""
        return self.with_null(True)

    def drop(self, p: float, generator: torch.Generator | None = None) -> "Cond":
        """Conditioning dropout for CFG training: each row becomes null with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        b = self.batch_size
        if b is None or p == 0.0:
            return self
        dev = next(getattr(self, f.name).device for f in fields(self) if getattr(self, f.name) is not None)
        u = torch.rand(b, generator=generator, device=generator.device if generator is not None else "cpu")
        return self.with_null((u < p).to(dev))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Cond":
        """Move to ``device``; floating fields (tokens, pooled, concat) also cast to ``dtype``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
            elif v.is_floating_point() and dtype is not None:
                out[f.name] = v.to(device=device, dtype=dtype)
            else:
                out[f.name] = v.to(device=device)
        return Cond(**out)

    def index(self, idx: Tensor | slice | Sequence[int]) -> "Cond":
        """Select rows (batch dimension)."""
        return Cond(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx]) for f in fields(self)})

    def repeat_interleave(self, n: int) -> "Cond":
        """Repeat each row ``n`` times (prompt k -> rows k*n ... k*n+n-1)."""
        return Cond(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).repeat_interleave(n, dim=0))
                for f in fields(self)
            }
        )

    @staticmethod
    def cat(conds: Sequence["Cond | None"]) -> "Cond | None":
        """Concatenate along the batch. All must have the same fields present (``null`` may differ)."""
        conds = list(conds)
        if all(c is None for c in conds):
            return None
        if any(c is None for c in conds):
            raise ValueError("Cond.cat: cannot concatenate None with a Cond")
        out = {}
        for f in fields(Cond):
            vals = [getattr(c, f.name) for c in conds]
            if f.name == "null":
                if all(v is None for v in vals):
                    out["null"] = None
                else:
                    out["null"] = torch.cat([c.null_mask(c.batch_size, _device_of(c)) for c in conds])
                continue
            present = [v is not None for v in vals]
            if not any(present):
                out[f.name] = None
            elif not all(present):
                raise ValueError(f"Cond.cat: field {f.name!r} is present in some Conds and absent in others")
            else:
                if f.name in ("tokens", "mask") and len({v.shape[1] for v in vals}) > 1:
                    raise ValueError(
                        f"Cond.cat: token lengths differ {[v.shape[1] for v in vals]}; pad tokens to one length "
                        "with mask=False on the padding"
                    )
                out[f.name] = torch.cat(vals, dim=0)
        return Cond(**out)


def _device_of(c: Cond) -> torch.device:
    for f in fields(c):
        v = getattr(c, f.name)
        if v is not None:
            return v.device
    return torch.device("cpu")
