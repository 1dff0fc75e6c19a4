"""Training examples from the feature cache, with randomness that is a pure function of position.

Every random choice of the trainer for one example (its crop, noise level, noise and conditioning
dropout) comes from a generator seeded by ``(seed, global sample position)``, and the order of examples
in epoch ``e`` is a permutation seeded by ``(seed, e)``. Hence:

- resuming at step ``k`` continues exactly where an uninterrupted run would be (no RNG state to restore);
- a run on W processes with the same global batch draws exactly the same examples and noise as one
  process (each rank takes a contiguous slice of the global batch), so their losses agree.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["FeatureSet", "example_generator", "batch_positions", "mix_seed"]


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (sha256; stable across runs and machines)."""
    h = hashlib.sha256(("/".join(str(p) for p in parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def example_generator(seed: int, position: int, stream: str = "train") -> torch.Generator:
    """The CPU generator for the example at global sample ``position``."""
    return torch.Generator().manual_seed(mix_seed(seed, stream, position))


def batch_positions(step: int, batch_size: int, micro: int, accumulate: int, rank: int, world: int) -> range:
    """Global sample positions of (optimizer step, micro-step, rank): a contiguous slice of the step's batch."""
    per = batch_size // (accumulate * world)
    if per * accumulate * world != batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} must be divisible by optim.accumulate x world size = {accumulate} x {world}"
        )
    start = step * batch_size + (micro * world + rank) * per
    return range(start, start + per)


@dataclass
class Example:
    x0: Tensor  # [C, ..., frames] normalised features
    mask: Tensor  # [1, ..., frames] (1 = real signal)
    meta: dict


class FeatureSet:
    """The items of one split of a prepared feature folder, normalised by the fitted codec, in memory.

    Args:
        feature_dir: a folder written by :func:`sonodiff.data.cache.prepare` (``index.json``, ``items/``, ``codec/``).
        split: which split to keep ("train", "valid", "test", ...).
        frames: length of training crops along the last axis; shorter items are zero-padded with mask 0.
        crop: "random" (a uniform start drawn from the example's generator) or "start".
        max_items: keep only the first N items (sorted by key) when > 0.
        pad: how items shorter than ``frames`` are completed: "silence" appends the codec's encoding of
            digital silence and trains on it (mask 1: a generator learns to end the sound), "mask" appends
            zeros with mask 0 (the loss ignores them).
    """

    def __init__(self, feature_dir: str | Path, split: str, frames: int, crop: str = "random", max_items: int = 0,
                 pad: str = "silence") -> None:
        from safetensors.torch import load_file

        from sonodiff.audio.codecs import load_codec

        self.dir = Path(feature_dir)
        index_path = self.dir / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: run `sonodiff data prepare` first")
        if crop not in ("random", "start"):
            raise ValueError(f"crop must be 'random' or 'start', got {crop!r}")
        if pad not in ("silence", "mask"):
            raise ValueError(f"pad must be 'silence' or 'mask', got {pad!r}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.codec = load_codec(self.dir / "codec")
        index = json.loads(index_path.read_text())
        entries = sorted((e for e in index["items"].values() if e["split"] == split), key=lambda e: e["key"])
        if max_items > 0:
            entries = entries[:max_items]
        if not entries:
            splits = sorted({e["split"] for e in index["items"].values()})
            raise ValueError(f"no items in split {split!r} of {self.dir}; splits present: {splits}")
        self.entries = entries
        self.frames = frames
        self.crop = crop
        feats = []
        with torch.no_grad():
            for e in entries:
                f = load_file(str(self.dir / "items" / e["hash"][:2] / f"{e['hash']}.safetensors"))["features"]
                feats.append(self.codec.normalize(f[None])[0].contiguous())
        self.features = feats
        self.pad = pad
        with torch.no_grad():  # the encoding of one frame of silence, [C, ..., 1]
            silent = self.codec.analyze(torch.zeros(1, self.codec.channels, self.codec.sample_rate // 10))
            self.silence = self.codec.normalize(silent)[0][..., :1].float()
        self._order_key: tuple[int, int] | None = None
        self._order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example ``[C, ..., frames]``."""
        return tuple(self.features[0].shape[:-1]) + (self.frames,)

    def labels(self, field: str) -> list[str]:
        """Sorted distinct values of a metadata field (e.g. the class labels)."""
        vals = {e.get(field) for e in self.entries}
        if None in vals:
            missing = next(e["path"] for e in self.entries if e.get(field) is None)
            raise ValueError(f"field {field!r} is missing for {missing} (and maybe others) in {self.dir}")
        return sorted(vals)

    def example(self, index: int, generator: torch.Generator) -> Example:
        f = self.features[index]
        n = f.shape[-1]
        T = self.frames
        if n >= T:
            start = int(torch.randint(0, n - T + 1, (1,), generator=generator)) if self.crop == "random" else 0
            x0 = f[..., start:start + T]
            mask = torch.ones((1,) * (f.ndim - 1) + (T,))
        elif self.pad == "silence":
            x0 = torch.cat([f, self.silence.expand(*f.shape[:-1], T - n)], dim=-1)
            mask = torch.ones((1,) * (f.ndim - 1) + (T,))
        else:
            x0 = torch.nn.functional.pad(f, (0, T - n))
            mask = torch.zeros((1,) * (f.ndim - 1) + (T,))
            mask[..., :n] = 1.0
        return Example(x0, mask, self.entries[index])

    def order(self, seed: int, epoch: int) -> Tensor:
        """The permutation of items for ``epoch``."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(mix_seed(seed, "epoch", epoch)))

    def index_at(self, seed: int, position: int) -> int:
        """Item index at global sample position (epoch-wise permutations; the current epoch's is cached)."""
        epoch, pos = divmod(position, len(self))
        if self._order_key != (seed, epoch):
            self._order_key, self._order = (seed, epoch), self.order(seed, epoch)
        return int(self._order[pos])
