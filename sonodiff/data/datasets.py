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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sonodiff.audio.codecs import load_codec
from sonodiff.audio.io import load_audio
from sonodiff.data.items import Item
from sonodiff.data.layouts import scan

__all__ = ["CachedDataset", "Example", "FolderDataset", "crop_or_pad", "field_value", "find_feature_dirs",
           "frame_seconds", "pad_collate"]

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


def field_value(entry: dict, field: str):
    """An item's conditioning field: ``label``, ``caption``, ``transcript``, ``speaker``, or ``meta.KEY`` (an extra
    metadata column of the dataset); None when the item has none."""
    if field.startswith("meta."):
        return (entry.get("meta") or {}).get(field[5:])
    return entry.get(field)


def frame_seconds(codec) -> float:
    """Seconds between consecutive frames along the last axis of the codec's features: the mel hop (times a latent codec's factor), or one sample."""
    if not codec.sample_rate:
        raise ValueError(f"codec {codec.name!r} has no sample rate, so its frames have no duration")
    return codec.hop_samples / codec.sample_rate


@dataclass
class Example:
    """One crop of a cached item: what the trainer and :meth:`CachedDataset.__getitem__` are built from."""

    x0: Tensor  # [C, ..., S] normalised features
    mask: Tensor  # [1, ..., S] float: 1 = real signal (or trained-on silence padding), 0 = masked-out padding
    meta: dict  # the item's index entry (key, path, split, caption, label, ..., hash, duration_s)
    start: int = 0  # the crop's first frame in the item (0 when the item is padded)


PADS = ("mask", "silence")


class CachedDataset(_Segmenting):
    """Features from a prepared cache (:func:`sonodiff.data.cache.prepare`), normalised by the cache's fitted
    codec: the one cached-feature dataset, used by the trainer and as a ``torch.utils.data.Dataset``.

    Args:
        path: a feature folder, or a cache / dataset folder holding exactly one.
        split: keep the items of this split (None = all; a split with no item is an error naming those present).
        segment: crop/pad length in frames (mel) or samples (waveform); None = whole items.
        crop: "random" (a uniform start from the example's generator), "start" or "center".
        seed: seeds the per-(epoch, index) generators of :meth:`__getitem__` (the trainer passes its own).
        pad: items shorter than ``segment``: "mask" appends zeros with mask 0 (ignored by the loss), "silence"
            appends the codec's encoding of digital silence with mask 1 (a generator learns to end the sound).
        max_items: keep only the first N items (sorted by key) when > 0.
        in_memory: normalise every item once and keep it in memory (training), instead of reading per access.
        codec: normalise with this fitted codec instead of the cache's own (a training run keeps the codec it
            started with, so a later refit of the shared cache never changes what a resumed run sees).
    """

    def __init__(self, path: str | os.PathLike, split: str | None = None, segment: int | None = None,
                 crop: Crop = "random", seed: int = 0, *, pad: str = "mask", max_items: int = 0,
                 in_memory: bool = False, codec=None) -> None:
        super().__init__(segment, crop, seed)
        if pad not in PADS:
            raise ValueError(f"pad must be one of {list(PADS)}, got {pad!r}")
        if segment is not None and segment < 1:
            raise ValueError(f"segment must be >= 1 frames or None, got {segment}")
        dirs = find_feature_dirs(path)
        if len(dirs) != 1:
            if not dirs and not Path(path).exists():
                raise FileNotFoundError(f"{path} not found: run `sonodiff data prepare` first")
            raise ValueError(f"{path} holds {len(dirs)} prepared feature folders {[d.name for d in dirs]}; "
                             "pass one of them")
        self.dir = dirs[0]
        index = json.loads((self.dir / "index.json").read_text())
        self.codec = codec if codec is not None else load_codec(self.dir / "codec")
        entries = [e for _, e in sorted(index["items"].items()) if split is None or e["split"] == split]
        if max_items > 0:
            entries = entries[:max_items]
        if split is not None and not entries:
            splits = sorted({e["split"] for e in index["items"].values()})
            raise ValueError(f"no items in split {split!r} of {self.dir}; splits present: {splits}")
        self.entries, self.pad = entries, pad
        self.silence = None
        if pad == "silence" and self.codec.modality == "audio":  # images have no silence (nor need padding)
            with torch.no_grad():  # the encoding of one frame of digital silence, [C, ..., 1]
                silent = self.codec.analyze(torch.zeros(1, self.codec.channels, self.codec.sample_rate // 10))
                self.silence = self.codec.normalize(silent)[0][..., :1].float()
        self._normed = [self._read_normalized(i) for i in range(len(entries))] if in_memory else None

    def __len__(self) -> int:
        return len(self.entries)

    def features(self, index: int) -> Tensor:
        """Stored (un-normalised) features of entry ``index``."""
        from safetensors import safe_open

        h = self.entries[index]["hash"]
        with safe_open(str(self.dir / "items" / h[:2] / f"{h}.safetensors"), "pt") as f:
            return f.get_tensor("features")

    def _read_normalized(self, index: int) -> Tensor:
        with torch.no_grad():
            return self.codec.normalize(self.features(index)[None])[0].float().contiguous()

    def normalized(self, index: int) -> Tensor:
        """Normalised features ``[C, ..., frames]`` of entry ``index`` (from memory when ``in_memory``)."""
        return self._normed[index] if self._normed is not None else self._read_normalized(index)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example ``[C, ..., segment]``."""
        if self.segment is None:
            raise ValueError("examples have no fixed shape without a segment length")
        return tuple(self.normalized(0).shape[:-1]) + (self.segment,)

    @property
    def frame_seconds(self) -> float:
        """Seconds per frame along the last axis (``Example.start * frame_seconds`` = the crop's start in s)."""
        return frame_seconds(self.codec)

    def labels(self, field: str) -> list[str]:
        """Sorted distinct values of a metadata field (e.g. the class labels)."""
        vals = {field_value(e, field) for e in self.entries}
        if None in vals:
            missing = next(e["path"] for e in self.entries if field_value(e, field) is None)
            raise ValueError(f"field {field!r} is missing for {missing} (and maybe others) in {self.dir}")
        return sorted(vals)

    def example(self, index: int, generator: torch.Generator | None) -> Example:
        """Entry ``index`` cropped or padded to ``segment`` frames; a random crop's start comes from ``generator``."""
        f = self.normalized(index)
        n, T = f.shape[-1], self.segment
        ones = (1,) * (f.ndim - 1)
        if T is None:
            return Example(f, torch.ones(ones + (n,)), self.entries[index], 0)
        if n >= T:
            if self.crop == "random":
                start = int(torch.randint(0, n - T + 1, (1,), generator=generator))
            else:
                start = (n - T) // 2 if self.crop == "center" else 0
            return Example(f[..., start:start + T], torch.ones(ones + (T,)), self.entries[index], start)
        if self.pad == "silence" and self.silence is not None:
            return Example(torch.cat([f, self.silence.expand(*f.shape[:-1], T - n)], dim=-1), torch.ones(ones + (T,)),
                           self.entries[index], 0)
        mask = torch.zeros(ones + (T,))
        mask[..., :n] = 1.0
        return Example(torch.nn.functional.pad(f, (0, T - n)), mask, self.entries[index], 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.example(index, self._generator(index))
        return {"x": ex.x0, "mask": ex.mask.reshape(-1).bool(), **_text_fields(self.entries[index])}
