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

import torch
from torch import Tensor

__all__ = ["PositionOrder", "batch_positions", "example_generator", "mix_seed"]


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


class PositionOrder:
    """The item index at each global sample position: epoch ``e`` visits the ``n`` items in a permutation seeded
    by ``(seed, e)`` (the current epoch's is cached)."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"need at least one item, got {n}")
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch)))

    def __call__(self, position: int) -> int:
        epoch, pos = divmod(position, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self.permutation(epoch)
        return int(self._perm[pos])
