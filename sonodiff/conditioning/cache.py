"""Optional cache of text embeddings: one safetensors file per (conditioner config, text).

``text_cache_key(config, text)`` = sha256 of ``{"conditioner": config.to_dict(), "text": text}`` as canonical
JSON (sorted keys): a pure function, so the same text under the same frozen encoder and settings always maps to
the same file, and any change of checkpoint path, pooling, max length or dtype maps elsewhere. Files live at
``cache_dir/<key[:2]>/<key>.safetensors`` and hold ``tokens [L_real, D]`` (real tokens only) and
``pooled [D]``; each is written to a temporary name and renamed, so a killed writer never leaves a partial file.

The key does not hash the checkpoint's weights: if the files at a config's ``path`` are replaced, use a new
``cache_dir``. With the data cache of ``sonodiff data prepare`` (``<dataset>/.sonodiff_cache``) use
``cache_dir=<that cache>/text``: the captions of its index are encoded once and shared by every codec.

Only frozen encoders may be cached (a trainable encoder's outputs change as it learns). Classifier-free dropout
is applied after the cache, like ``forward(..., drop=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from sonodiff.conditioning.base import ConditionerConfig, draw_drop_mask
from sonodiff.core.cond import Cond
from sonodiff.utils.atomic import atomic_save_tensors

__all__ = ["cache_path", "encode_cached", "text_cache_key"]


def text_cache_key(config: ConditionerConfig, text: str) -> str:
    """sha256 hex digest of the canonical JSON of the conditioner config and the text."""
    blob = json.dumps({"conditioner": config.to_dict(), "text": text}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.safetensors"


def encode_cached(conditioner, texts: Sequence[str], cache_dir: str | os.PathLike, *, batch_size: int = 64,
                  drop: bool = False, generator: torch.Generator | None = None) -> Cond:
    """Like ``conditioner(conditioner.tokenize(texts))`` but reading/writing per-text files under ``cache_dir``.

    Returns ``Cond(tokens [B, L, D], mask [B, L], pooled [B, D])`` on the conditioner's device; ``L`` is the
    longest text (or ``max_length`` with ``padding="max_length"``), padding positions are zero with mask False.
    """
    from safetensors.torch import load_file

    if conditioner.trainable:
        raise ValueError("encode_cached needs a frozen conditioner (trainable=False): a trainable encoder's "
                         "embeddings change during training")
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError(f"encode_cached takes a non-empty list of strings, got {texts!r}")
    keys = [text_cache_key(conditioner.config, t) for t in texts]
    entries: dict[str, dict[str, torch.Tensor]] = {}
    for k in set(keys):
        p = cache_path(cache_dir, k)
        if p.is_file():
            entries[k] = load_file(str(p))
    todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in entries))
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        cond = conditioner(conditioner.tokenize(chunk))
        for j, t in enumerate(chunk):
            real = cond.mask[j]
            entry = {"tokens": cond.tokens[j][real].detach().cpu().contiguous(),
                     "pooled": cond.pooled[j].detach().cpu().contiguous()}
            k = text_cache_key(conditioner.config, t)
            atomic_save_tensors(cache_path(cache_dir, k), entry, fsync=False)  # a cache: rebuilt if lost
            entries[k] = entry

    lengths = [entries[k]["tokens"].shape[0] for k in keys]
    cfg = conditioner.config
    L = max(lengths)
    if getattr(cfg, "padding", "longest") == "max_length":
        L = max(L, conditioner.get_tokenizer().max_length)
    dev = conditioner.device
    d = entries[keys[0]]["tokens"].shape[1]
    tokens = torch.zeros(len(keys), L, d, dtype=entries[keys[0]]["tokens"].dtype)
    mask = torch.zeros(len(keys), L, dtype=torch.bool)
    for i, k in enumerate(keys):
        tokens[i, : lengths[i]] = entries[k]["tokens"]
        mask[i, : lengths[i]] = True
    pooled = torch.stack([entries[k]["pooled"] for k in keys])
    out = Cond(tokens=tokens.to(dev), mask=mask.to(dev), pooled=pooled.to(dev))
    if drop and cfg.dropout > 0:
        out = out.with_null(draw_drop_mask(len(keys), cfg.dropout, generator, dev))
    return out
