"""Map-style datasets: decode files each time (:class:`FolderDataset`) or read a prepared feature cache
(:class:`CachedDataset`). Both return dicts that ``torch.utils.data.default_collate`` can batch when a
fixed ``segment`` is set, or :func:`pad_collate` otherwise::

    {"x": [C, ..., S] float32, "mask": [S] bool (True = real frame/sample), "key": str, "caption": str,
     "label": str, "speaker": str, "transcript": str, "split": str}

Missing text fields are ``""``. ``S`` is the segment length (samples for audio, frames for features).
Random crops are drawn from a generator seeded by ``(seed, epoch, index)``, so they do not depend on
worker count or order; call :meth:`set_epoch` each epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sonodiff.audio.codecs import load_codec
from sonodiff.audio.io import load_audio
from sonodiff.data.items import Item
from sonodiff.data.layouts import scan

__all__ = ["CachedDataset", "FolderDataset", "crop_or_pad", "find_feature_dirs", "pad_collate"]

Crop = Literal["random", "start", "center"]
CROPS = ("random", "start", "center")


def crop_or_pad(x: Tensor, length: int, crop: Crop = "random", generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
    """Crop or zero-pad the last axis of ``x [..., T]`` to ``length``; returns ``(x [..., length], mask
    [length] bool)``. ``crop``: "random" (uniform offset drawn from ``generator``), "start" or "center"."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; valid: {list(CROPS)}")
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    t = x.shape[-1]
    if t >= length:
        if crop == "start" or t == length:
            off = 0
        elif crop == "center":
            off = (t - length) // 2
        else:
            off = int(torch.randint(0, t - length + 1, (), generator=generator))
        return x[..., off:off + length], torch.ones(length, dtype=torch.bool)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:t] = True
    return torch.nn.functional.pad(x, (0, length - t)), mask


def pad_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch examples of different lengths: ``x`` zero-padded to the longest ``[B, C, ..., S_max]`` and
    ``mask [B, S_max]``; string fields become lists."""
    n = max(b["x"].shape[-1] for b in batch)
    out: dict[str, Any] = {
        "x": torch.stack([torch.nn.functional.pad(b["x"], (0, n - b["x"].shape[-1])) for b in batch]),
        "mask": torch.stack([torch.nn.functional.pad(b["mask"], (0, n - b["mask"].shape[-1])) for b in batch]),
    }
    for k in batch[0]:
        if k not in out:
            out[k] = [b[k] for b in batch]
    return out


def _text_fields(it: dict[str, Any]) -> dict[str, str]:
    return {k: it.get(k) or "" for k in ("key", "caption", "label", "speaker", "transcript", "split")}


class _Segmenting(torch.utils.data.Dataset):
    def __init__(self, segment: int | None, crop: Crop, seed: int) -> None:
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; valid: {list(CROPS)}")
        self.segment, self.crop, self.seed, self.epoch = segment, crop, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _segment(self, x: Tensor, index: int) -> tuple[Tensor, Tensor]:
        if self.segment is None:
            return x, torch.ones(x.shape[-1], dtype=torch.bool)
        return crop_or_pad(x, self.segment, self.crop, self._generator(index))


class FolderDataset(_Segmenting):
    """Audio decoded from files each time. ``x``: audio ``[C, S]`` at ``sample_rate`` Hz after the
    ``channels`` policy. ``split``: keep items of this split (None = all). ``segment_s``: crop/pad length
    in seconds (None = whole files). Bad entries found while scanning are in ``self.problems``; files that
    fail to decode raise (run ``sonodiff data prepare`` to find and skip them)."""

    def __init__(self, root: str | os.PathLike, sample_rate: int, channels: Literal["mono", "stereo", "keep"]
                 = "mono", layout: str = "folder", split: str | None = None, segment_s: float | None = None,
                 crop: Crop = "random", seed: int = 0, resample_quality: str = "high",
                 layout_options: dict[str, Any] | None = None) -> None:
        super().__init__(None if segment_s is None else round(segment_s * sample_rate), crop, seed)
        s = scan(root, layout, **(layout_options or {}))
        self.root, self.problems = Path(root), s.problems
        self.items: list[Item] = [it for it in s.items if split is None or it.split == split]
        self.sample_rate, self.channels, self.quality = int(sample_rate), channels, resample_quality

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        audio, _ = load_audio(self.root / it.path, self.sample_rate, self.channels, self.quality)
        x, mask = self._segment(audio, index)
        return {"x": x, "mask": mask, **_text_fields(it.to_dict())}


def find_feature_dirs(path: str | os.PathLike) -> list[Path]:
    """Feature folders (those holding ``index.json``) at ``path``, in ``path`` or in ``path/.sonodiff_cache``."""
    path = Path(path)
    if (path / "index.json").exists():
        return [path]
    out = []
    for base in (path, path / ".sonodiff_cache"):
        if base.is_dir():
            out += sorted(p for p in base.iterdir() if (p / "index.json").exists())
    return out


class CachedDataset(_Segmenting):
    """Features from a prepared cache, normalised by the cache's fitted codec. ``x``: ``codec.normalize``
    of the stored features (mel: ``[C, n_mels, S]`` frames; waveform: ``[C, S]`` samples). ``path``: a
    feature folder, or a cache / dataset folder holding exactly one. ``segment``: crop/pad length in
    frames (mel) or samples (waveform); None = whole items."""

    def __init__(self, path: str | os.PathLike, split: str | None = None, segment: int | None = None,
                 crop: Crop = "random", seed: int = 0) -> None:
        super().__init__(segment, crop, seed)
        dirs = find_feature_dirs(path)
        if len(dirs) != 1:
            raise ValueError(f"{path} holds {len(dirs)} prepared feature folders {[d.name for d in dirs]}; "
                             "pass one of them")
        self.dir = dirs[0]
        index = json.loads((self.dir / "index.json").read_text())
        self.codec = load_codec(self.dir / "codec")
        self.entries = [e for _, e in sorted(index["items"].items()) if split is None or e["split"] == split]

    def __len__(self) -> int:
        return len(self.entries)

    def features(self, index: int) -> Tensor:
        """Stored (un-normalised) features of entry ``index``."""
        from safetensors import safe_open

        h = self.entries[index]["hash"]
        with safe_open(str(self.dir / "items" / h[:2] / f"{h}.safetensors"), "pt") as f:
            return f.get_tensor("features")

    def __getitem__(self, index: int) -> dict[str, Any]:
        x = self.codec.normalize(self.features(index))
        x, mask = self._segment(x, index)
        return {"x": x, "mask": mask, **_text_fields(self.entries[index])}
