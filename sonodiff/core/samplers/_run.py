"""The bookkeeping every sampler shares: input checks, float64 state, denoiser calls, NFE, noise, callback.

Samplers are pure functions ``impl(run, x, **options) -> x_final``; :class:`Run` is created per call and
holds nothing between calls. It validates the grid and the state, calls the denoiser (checking the shape
and finiteness of what comes back), counts function evaluations (NFE), draws per-example noise and runs
the per-step callback and the optional Langevin corrector.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sonodiff.core.noise import BrownianTreeNoiseSampler, Generators, NoiseSampler, check_generators, randn
from sonodiff.core.schedules import check_sigmas

__all__ = ["Corrector", "Run"]

_F64 = torch.float64


class Corrector:
    """Annealed Langevin corrector (Song et al. 2021, "Score-Based Generative Modeling through SDEs", Alg. 4/5).

    At noise level sigma, ``n`` steps of x <- x + e g + sqrt(2 e) s_noise z with the score g = (D(x) - x) / sigma^2
    (Tweedie) and z ~ N(0, I). The paper's step is e = 2 (snr ||z|| / ||g||)^2 with norms averaged over the
    batch; here ||z|| / ||g|| is replaced by its noise-dominated expectation sigma (E||z||^2 = d,
    E||g||^2 ~ d / sigma^2), e = 2 (snr sigma)^2: a function of sigma alone, so example k depends neither on
    its batch (per-sample seeds) nor on its own draw (the per-example ratio diverges where g ~ 0 in low
    dimension).
    """

    def __init__(self, n: int, snr: float, s_noise: float) -> None:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n_corrector must be an int >= 0, got {n!r}")
        if not snr > 0:
            raise ValueError(f"snr must be > 0, got {snr}")
        if not s_noise >= 0:
            raise ValueError(f"s_noise must be >= 0, got {s_noise}")
        self.n, self.snr, self.s_noise = n, float(snr), float(s_noise)

    def __call__(self, run: Run, x: Tensor, sigma: float, i: int) -> Tensor:
        for _ in range(self.n):
            g = (run.denoise(x, sigma, i) - x) / sigma**2
            e = 2.0 * (self.snr * sigma) ** 2
            x = x + e * g + math.sqrt(2.0 * e) * self.s_noise * run.randn()
        return x


class Run:
    """One sampler call: ``x`` ``[B, ...]`` state at ``sigmas[0]``, ``sigmas`` float64 strictly decreasing grid."""

    def __init__(
        self,
        denoiser: Callable,
        x: Tensor,
        sigmas: Tensor,
        cond=None,
        generator: Generators = None,
        callback: Callable[[dict], None] | None = None,
        stats: dict | None = None,
        corrector: Corrector | None = None,
    ) -> None:
        if not isinstance(x, Tensor) or x.ndim < 1 or not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor [B, ...], got {type(x).__name__} {getattr(x, 'shape', '')}")
        check_sigmas(sigmas)
        if stats is not None and not isinstance(stats, dict):
            raise TypeError(f"stats must be a dict to fill or None, got {type(stats).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self.denoiser, self.cond, self.callback, self.stats, self.corrector = denoiser, cond, callback, stats, corrector
        self.sigmas = [float(s) for s in sigmas.detach().to("cpu", _F64)]
        self.n_steps = len(self.sigmas) - 1
        self.B, self.shape, self.dtype, self.device = x.shape[0], tuple(x.shape), x.dtype, x.device
        self.generator = check_generators(generator, self.B)
        self.x = x.to(_F64)
        self.nfe = 0

    # ------------------------------------------------------------------ the model
    def denoise(self, x: Tensor, sigma: float, i: int) -> Tensor:
        """D(x, sigma) as float64 ``[B, ...]``; raises on a wrong shape or non-finite values."""
        s = torch.full((self.B,), sigma, dtype=_F64, device=self.device)
        d = self.denoiser(x, s, self.cond)
        self.nfe += 1
        if not isinstance(d, Tensor) or tuple(d.shape) != self.shape:
            got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"the denoiser returned {got} for x of shape {self.shape} at step {i} (sigma={sigma}); they must match")
        if not torch.isfinite(d).all():
            raise FloatingPointError(f"the denoiser returned NaN/inf at step {i} (sigma={sigma}, NFE {self.nfe})")
        return d.to(_F64)

    # ------------------------------------------------------------------ noise
    def randn(self) -> Tensor:
        """Standard normal ``[B, ...]`` float64 from the run's generator(s) (row k from generator k for a list)."""
        return randn(self.shape, self.generator, self.device)

    def step_noise(self) -> NoiseSampler:
        """Independent N(0, I) per step (ancestral samplers)."""
        return lambda sigma, sigma_next: self.randn()

    def brownian_noise(self) -> NoiseSampler:
        """Brownian-tree noise over [smallest positive sigma, sigmas[0]] (SDE samplers): consistent across grids."""
        positive = [s for s in self.sigmas if s > 0]
        if len(positive) < 2:  # at most one step, to 0: no noise is ever drawn
            return lambda sigma, sigma_next: self.randn()
        return BrownianTreeNoiseSampler(self.x, positive[-1], positive[0], self.generator)

    # ------------------------------------------------------------------ per step
    def end_step(self, i: int, x: Tensor, denoised: Tensor) -> Tensor:
        """After step i (state now at sigmas[i + 1]): the corrector, then the callback."""
        s_next = self.sigmas[i + 1]
        if self.corrector is not None and s_next > 0:
            x = self.corrector(self, x, s_next, i)
        if self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": self.sigmas[i], "sigma_next": s_next, "denoised": denoised, "nfe": self.nfe})
        return x

    def finish(self, x: Tensor) -> Tensor:
        if self.stats is not None:
            self.stats.update(nfe=self.nfe, steps=self.n_steps)
        return x.to(self.dtype)


def check_unit(name: str, value: float, lo: float = 0.0, hi: float = math.inf) -> float:
    """Raise unless lo <= value <= hi."""
    if not (isinstance(value, (int, float)) and lo <= value <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return float(value)
