"""Noise for stochastic samplers: per-example Gaussian draws and a virtual Brownian tree.

A stochastic sampler that draws fresh Gaussian noise at every step gives a different path for every step
count. A *Brownian tree* (Gaines & Lyons 1997; Li et al. 2020, "Scalable Gradients for Stochastic
Differential Equations", the ``torchsde`` virtual Brownian tree; used by k-diffusion's
``BrownianTreeNoiseSampler``) instead fixes one Brownian path W(t) per seed and answers any increment
W(t_b) - W(t_a) deterministically, so the same seed gives the same path whatever the grid: the increment
over a coarse step is exactly the sum of the increments over the fine steps that make it up.

This implementation needs no ``torchsde``. W on [t0, t1] is refined by Brownian-bridge bisection:
W(mid) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) z_node, down to ``depth`` levels (resolution
(t1 - t0) / 2^depth), and linearly interpolated inside the last interval. Each z_node is drawn from a
counter-based generator (SplitMix64, Steele et al. 2014, hashed from the example's seed, the node and the
element index; Box-Muller to a normal), so nothing is stored, every example has its own seed (example k
does not depend on the batch size) and a batch is answered with vectorised integer arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["BrownianTree", "BrownianTreeNoiseSampler", "Generators", "NoiseSampler", "check_generators", "draw_seeds", "hash_normal", "randn", "splitmix64"]

Generators = torch.Generator | Sequence[torch.Generator] | None
NoiseSampler = Callable[[float, float], Tensor]
"""``noise_sampler(sigma, sigma_next) -> Tensor [B, ...]``: standard normal noise for the step sigma -> sigma_next."""

_M64 = (1 << 64) - 1


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= (1 << 63) else c


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)
_ELEM = _i64(0xD1B54A32D192ED03)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (two's-complement wrap-around = arithmetic mod 2^64)."""
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def hash_normal(keys: Tensor, n: int) -> Tensor:
    """Standard normals ``[B, n]`` (float64), a pure function of ``keys`` ``[B]`` (int64) and the element index."""
    idx = torch.arange(n, dtype=torch.int64, device=keys.device) * _ELEM
    h = splitmix64(keys.unsqueeze(1) + idx)
    hi = _shr(h, 32).to(torch.float64)
    lo = (h & 0xFFFFFFFF).to(torch.float64)
    u1 = (hi + 0.5) / 4294967296.0  # (0, 1): log is finite
    u2 = lo / 4294967296.0
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


# =========================================================================== per-example generators
def check_generators(generator: Generators, batch_size: int) -> Generators:
    """Accept None, one ``torch.Generator`` or a list of exactly ``batch_size`` of them (one per example)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size or not all(isinstance(g, torch.Generator) for g in generator):
            raise ValueError(
                f"generator must be a torch.Generator or a list of {batch_size} (one per example); "
                f"got a {type(generator).__name__} of {len(generator)} items"
            )
        return generator
    raise TypeError(f"generator must be None, a torch.Generator or a list of them, got {type(generator).__name__}")


def randn(shape: Sequence[int], generator: Generators, device, dtype=torch.float64) -> Tensor:
    """Standard normal ``[B, ...]`` on ``device``; with a list of generators row k comes from generator k alone.

    Draws happen on each generator's own device (CPU generators work for CUDA states) and are moved after.
    """
    shape = tuple(shape)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype).to(device) for g in generator]
    return torch.stack(rows)


def draw_seeds(batch_size: int, generator: Generators) -> Tensor:
    """One int64 seed per example ``[B]``: from generator k for a list, else ``batch_size`` draws from one generator."""
    hi = 1 << 62
    if generator is None or isinstance(generator, torch.Generator):
        g = generator
        return torch.randint(0, hi, (batch_size,), generator=g, device=g.device if g is not None else "cpu").cpu()
    return torch.cat([torch.randint(0, hi, (1,), generator=g, device=g.device).cpu() for g in generator])


# =========================================================================== Brownian tree
class BrownianTree:
    """A virtual Brownian motion W(t), t in [t0, t1], one independent path per seed, evaluated on demand.

    Args:
        seeds: ``[B]`` int64, one per example.
        shape: the shape of one example (W(t) has shape ``[B, *shape]``).
        t0, t1: the time interval (t0 < t1). W(t0) = 0.
        depth: bisection levels; below (t1 - t0) / 2^depth the path is linear. The default (None) resolves
            1e-3 of t0 (or 2^-30 of the interval when t0 = 0), at most 48 levels.
    """

    def __init__(self, seeds: Tensor, shape: Sequence[int], t0: float, t1: float, depth: int | None = None, device="cpu") -> None:
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
            raise ValueError(f"need finite t0 < t1, got t0={t0}, t1={t1}")
        if depth is None:
            tol = 1e-3 * t0 if t0 > 0 else (t1 - t0) * 2.0**-30
            depth = min(48, max(8, math.ceil(math.log2((t1 - t0) / tol))))
        if not 1 <= depth <= 60:
            raise ValueError(f"depth must be in [1, 60], got {depth}")
        self.seeds = seeds.to(device=device, dtype=torch.int64)
        self.shape = tuple(shape)
        self.n = math.prod(self.shape)
        self.t0, self.t1, self.depth, self.device = float(t0), float(t1), int(depth), device
        self._cache: dict[float, Tensor] = {}
        self._nodes: dict[int, Tensor] = {}

    def _z(self, node: int) -> Tensor:
        keys = splitmix64(self.seeds ^ _i64(node * 0x2545F4914F6CDD1D + 0x1234567))
        return hash_normal(keys, self.n)

    def _w_unit(self, u: float) -> Tensor:
        """Standard Brownian motion B(u) on [0, 1] at u: ``[B, n]``."""
        a, b = 0.0, 1.0
        wa = torch.zeros(len(self.seeds), self.n, dtype=torch.float64, device=self.device)
        wb = self._nodes.get(0)
        if wb is None:
            wb = self._z(0)  # B(1) ~ N(0, 1)
        path = {0: wb}
        node = 1
        for _ in range(self.depth):
            if u == a:
                break
            mid = 0.5 * (a + b)
            wm = self._nodes.get(node)  # consecutive queries share the top of their paths
            if wm is None:
                wm = 0.5 * (wa + wb) + math.sqrt(0.25 * (b - a)) * self._z(node)
            path[node] = wm
            if u < mid:
                b, wb, node = mid, wm, 2 * node
            else:
                a, wa, node = mid, wm, 2 * node + 1
        self._nodes = path
        return wa if u == a else wa + ((u - a) / (b - a)) * (wb - wa)

    def __call__(self, t: float) -> Tensor:
        """W(t) ``[B, *shape]`` (float64)."""
        t = float(t)
        slack = 1e-12 * (self.t1 - self.t0)  # grids computed in floating point may overshoot by an ulp
        if not self.t0 - slack <= t <= self.t1 + slack:
            raise ValueError(f"t={t} outside the tree's interval [{self.t0}, {self.t1}]")
        if t not in self._cache:
            if len(self._cache) >= 4:  # samplers query neighbouring times: keep the last few
                self._cache.pop(next(iter(self._cache)))
            u = (t - self.t0) / (self.t1 - self.t0)
            self._cache[t] = math.sqrt(self.t1 - self.t0) * self._w_unit(min(max(u, 0.0), 1.0))
        return self._cache[t].reshape((len(self.seeds),) + self.shape)

    def increment(self, ta: float, tb: float) -> Tensor:
        """W(tb) - W(ta)."""
        return self(tb) - self(ta)


class BrownianTreeNoiseSampler:
    """``noise_sampler(sigma, sigma_next)``: (W(sigma) - W(sigma_next)) / sqrt(sigma - sigma_next) ~ N(0, I).

    The Brownian time is sigma itself on [sigma_min, sigma_max] (as k-diffusion's default), with one seed per
    example from ``generator`` (a list of B generators: example k depends on its generator alone).
    ``x`` ``[B, ...]`` gives the batch size, shape and device.
    """

    def __init__(self, x: Tensor, sigma_min: float, sigma_max: float, generator: Generators = None, depth: int | None = None) -> None:
        generator = check_generators(generator, x.shape[0])
        seeds = draw_seeds(x.shape[0], generator)
        self.tree = BrownianTree(seeds, x.shape[1:], sigma_min, sigma_max, depth=depth, device=x.device)

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        t0, t1 = float(min(sigma, sigma_next)), float(max(sigma, sigma_next))
        if t1 <= t0:
            raise ValueError(f"need sigma != sigma_next, got {sigma}, {sigma_next}")
        return self.tree.increment(t0, t1) / math.sqrt(t1 - t0)
