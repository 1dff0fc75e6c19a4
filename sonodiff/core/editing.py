"""Editing: SDEdit starts, inpainting/outpainting/continuation by replacement, and RePaint resampling.

All maths in the VE space of the core (x = x0 + sigma * n). Masks are ``[B, ...]`` with the number of dims
of the data and broadcastable to it; 1 (True) marks the *known* region. Masks may be bool or 0/1 floats.

- SDEdit (Meng et al. 2022, "SDEdit: guided image synthesis and editing with SDEs"): noise the input to an
  intermediate sigma and run the sampler from there (variations, style transfer). :func:`sdedit_start`,
  :func:`sdedit`.
- Replacement (Song et al. 2021, "Score-based generative modeling through SDEs", App. I.2; Chung et al.):
  :class:`InpaintDenoiser` wraps a denoiser so the known region is pasted into the state it sees (known data
  noised to the current sigma) and/or into its x0 estimate. :func:`inpaint` samples with it and pastes the
  known region into the result, so the output keeps it exactly.
- RePaint (Lugmayr et al. 2022, Alg. 1 and the jump schedule of its Sec. 4.2): :func:`repaint`.
- Continuation is outpainting with a known prefix: :func:`prefix_mask`, :func:`span_mask`,
  :func:`continuation_inputs`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import check_sigma
from sonodiff.core.noise import randn
from sonodiff.core.samplers import sample
from sonodiff.core.schedules import check_sigmas
from sonodiff.core.shapes import bcast

__all__ = [
    "InpaintDenoiser",
    "continuation_inputs",
    "inpaint",
    "prefix_mask",
    "repaint",
    "repaint_schedule",
    "sdedit",
    "sdedit_start",
    "span_mask",
]

Denoiser = Callable[[Tensor, Tensor, "Cond | None"], Tensor]


def _randn(shape: Sequence[int], generator, dtype: torch.dtype, device) -> Tensor:
    """Standard normal; ``generator`` one Generator or a list of B (row k from generator k alone)."""
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per example or a single one")
    return randn(shape, generator, device, dtype)


def _check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Validate a known-region mask against data ``x`` and return it as bool, broadcast to ``x.shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor [B, ...] (1 = known), got {type(mask).__name__}")
    if mask.ndim != x.ndim:
        raise ValueError(f"mask must have the dims of x {tuple(x.shape)} (use size-1 dims to broadcast), got {tuple(mask.shape)}")
    try:
        ok = torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to x shape {tuple(x.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("a non-bool mask must contain only 0 and 1 (1 = known); soft masks are not supported")
        mask = mask != 0
    return torch.broadcast_to(mask.to(x.device), x.shape)


# =========================================================================== masks
def span_mask(shape: Sequence[int], start: int, end: int, *, device=None) -> Tensor:
    """Bool mask of ``shape`` (``[B, C, T]`` or ``[B, C, H, W]``: time is the last axis), True on
    ``[start, end)`` of the last axis. Indices are elements (samples or frames); convert seconds with the
    signal's rate before calling."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be [B, ..., T], got {shape}")
    T = shape[-1]
    if not 0 <= start <= end <= T:
        raise ValueError(f"need 0 <= start <= end <= T={T}, got start={start}, end={end}")
    m = torch.zeros(shape, dtype=torch.bool, device=device)
    m[..., start:end] = True
    return m


def prefix_mask(shape: Sequence[int], length: int, *, device=None) -> Tensor:
    """Bool mask True on the first ``length`` elements of the last (time) axis: continuation keeps this prefix."""
    return span_mask(shape, 0, length, device=device)


def continuation_inputs(prefix: Tensor, total_length: int) -> tuple[Tensor, Tensor]:
    """``prefix`` ``[B, ..., Tp]`` -> (x_known ``[B, ..., total_length]`` zero-padded, mask True on the prefix).

    Feed both to :func:`inpaint` or :func:`repaint` to continue a signal past its end.
    """
    Tp = prefix.shape[-1]
    if total_length < Tp:
        raise ValueError(f"total_length={total_length} is shorter than the prefix ({Tp})")
    shape = tuple(prefix.shape[:-1]) + (total_length,)
    x_known = prefix.new_zeros(shape)
    x_known[..., :Tp] = prefix
    return x_known, prefix_mask(shape, Tp, device=prefix.device)


# =========================================================================== SDEdit
def sdedit_start(
    x0: Tensor,
    sigmas: Tensor,
    *,
    strength: float | None = None,
    sigma_start: float | None = None,
    generator=None,
) -> tuple[Tensor, Tensor]:
    """SDEdit start (Meng et al. 2022): ``(x_start [B, ...], truncated grid)``.

    Give exactly one of:
      - ``strength`` in [0, 1]: keep the last k = floor(N * strength) steps of the N-step grid ``sigmas``
        (diffusers' img2img convention); the start is sigmas[N - k].
      - ``sigma_start`` in [0, sigmas[0]]: the grid becomes [sigma_start] + the grid entries below it.
    x_start = x0 + sigma_start * n, n ~ N(0, I) from ``generator`` (a Generator or one per example).
    Strength 0 / sigma_start 0 gives x_start = x0 and the grid ``[0]`` (no step): :func:`sdedit` then returns x0.
    """
    check_sigmas(sigmas)
    if (strength is None) == (sigma_start is None):
        raise ValueError(f"give exactly one of strength and sigma_start, got strength={strength}, sigma_start={sigma_start}")
    if sigmas[-1] != 0:
        raise ValueError(f"the SDEdit grid must end at 0, got last sigma {sigmas[-1].item()}")
    N = len(sigmas) - 1
    if strength is not None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        k = min(math.floor(N * strength + 1e-9), N)
        grid = sigmas[N - k :]
    else:
        if not 0.0 <= sigma_start <= float(sigmas[0]):
            raise ValueError(f"sigma_start must be in [0, sigmas[0]={float(sigmas[0])}], got {sigma_start}")
        below = sigmas[sigmas < sigma_start]
        grid = torch.cat([sigmas.new_tensor([sigma_start]), below]) if sigma_start > 0 else sigmas[-1:]
    s0 = float(grid[0])
    if s0 == 0.0:
        return x0.clone(), grid
    return x0 + s0 * _randn(x0.shape, generator, x0.dtype, x0.device), grid


def sdedit(
    denoiser: Denoiser,
    x0: Tensor,
    sigmas: Tensor,
    method: str,
    *,
    strength: float | None = None,
    sigma_start: float | None = None,
    cond: Cond | None = None,
    generator=None,
    **options,
) -> Tensor:
    """SDEdit: :func:`sdedit_start`, then ``sample(denoiser, x_start, grid, method, ...)``; ``x0`` ``[B, ...]``.

    Returns the edited signal (float64 from the sampler; ``x0`` itself, in its dtype, when nothing is noised).
    """
    x, grid = sdedit_start(x0, sigmas, strength=strength, sigma_start=sigma_start, generator=generator)
    if len(grid) < 2:
        return x
    return sample(denoiser, x, grid, method, cond=cond, generator=generator, **options)


# =========================================================================== replacement
class InpaintDenoiser:
    """Inpainting / outpainting by replacement as a denoiser wrapper.

    Args:
        denoiser: ``D(x [B, ...], sigma [B], cond) -> x0_hat``.
        x_known: ``[B, ...]`` clean data; only its known region matters.
        mask: ``[B, ...]`` (broadcastable), 1 / True = known.
        replace: where the known region is pasted:
            ``"x0"``: into the estimate, D' = m x_known + (1 - m) D(x);
            ``"state"``: into the input, D' = D(m (x_known + sigma n) + (1 - m) x) with fresh n ~ N(0, I)
            per call (the known data noised to the current level, q(x_sigma | x0));
            ``"both"`` (default): both.
        generator: for the state noise (a Generator or one per example).
    Sampling with it drives the known region of the state to x_known; :func:`inpaint` also pastes it into the
    final output so that it is kept exactly.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        x_known: Tensor,
        mask: Tensor,
        *,
        replace: Literal["x0", "state", "both"] = "both",
        generator=None,
    ) -> None:
        if replace not in ("x0", "state", "both"):
            raise ValueError(f"unknown replace mode {replace!r}; valid: ['both', 'state', 'x0']")
        self.denoiser = denoiser
        self.x_known = x_known
        self.mask = _check_mask(mask, x_known)
        self.replace = replace
        self.generator = generator

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        check_sigma(x, sigma)
        if x.shape != self.x_known.shape:
            raise ValueError(f"x {tuple(x.shape)} must have the shape of x_known {tuple(self.x_known.shape)}")
        known = self.x_known.to(x.dtype)
        if self.replace in ("state", "both"):
            n = _randn(x.shape, self.generator, x.dtype, x.device)
            x = torch.where(self.mask, known + bcast(sigma.to(x.dtype), x) * n, x)
        d = self.denoiser(x, sigma, cond)
        if self.replace in ("x0", "both"):
            d = torch.where(self.mask, known.to(d.dtype), d)
        return d


def inpaint(
    denoiser: Denoiser,
    x_known: Tensor,
    mask: Tensor,
    x: Tensor,
    sigmas: Tensor,
    method: str,
    *,
    replace: Literal["x0", "state", "both"] = "both",
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> Tensor:
    """Inpaint (or outpaint / continue) by replacement: sample with :class:`InpaintDenoiser`, then paste.

    ``x`` ``[B, ...]`` is the start state at ``sigmas[0]`` (e.g. ``sigmas[0] * randn``); ``x_known`` and
    ``mask`` as in :class:`InpaintDenoiser`. The returned ``[B, ...]`` equals ``x_known`` on the mask exactly.
    """
    wrapped = InpaintDenoiser(denoiser, x_known, mask, replace=replace, generator=generator)
    out = sample(wrapped, x, sigmas, method, cond=cond, generator=generator, **options)
    return torch.where(wrapped.mask, x_known.to(out.dtype), out)


# =========================================================================== RePaint
def repaint_schedule(num_steps: int, resample: int, jump: int) -> list[int]:
    """Grid indices visited by RePaint (Lugmayr et al. 2022, Sec. 4.2 "jump" schedule): 0 ... num_steps.

    Reverse steps go i -> i + 1. At every index p = jump, 2 jump, ... < num_steps reached by a reverse step,
    the state is re-noised back to p - jump, ``resample - 1`` times, so every segment is denoised ``resample``
    times. ``jump = 1`` is Algorithm 1 with U = ``resample``.
    """
    if num_steps < 1 or resample < 1 or jump < 1:
        raise ValueError(f"need num_steps, resample, jump >= 1; got {num_steps}, {resample}, {jump}")
    left = {p: resample - 1 for p in range(jump, num_steps, jump)}
    i, path = 0, [0]
    while i < num_steps:
        i += 1
        path.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            i -= jump
            path.append(i)
    return path


def repaint(
    denoiser: Denoiser,
    x_known: Tensor,
    mask: Tensor,
    sigmas: Tensor,
    *,
    resample: int = 10,
    jump: int = 10,
    method: str = "ddpm",
    generator=None,
    cond: Cond | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022): inpainting with jump-back resampling. Returns ``[B, ...]`` (float64).

    Every reverse step from sigma_i to sigma_{i+1} combines the known data noised to sigma_{i+1}
    (x_known + sigma_{i+1} n) on the mask with a one-step sample of the whole state elsewhere (Alg. 1, l. 5-8);
    going back from sigma_i to sigma_{i-jump} adds fresh noise of variance sigma_{i-jump}^2 - sigma_i^2
    (the VE forward kernel, l. 9). See :func:`repaint_schedule` for the path.

    Args:
        denoiser: ``D(x [B, ...], sigma [B], cond) -> x0_hat``.
        x_known: ``[B, ...]`` data; only the known region matters. mask: ``[B, ...]`` 1 / True = known.
        sigmas: float64 grid, strictly decreasing, ending at 0.
        resample: r, times each segment is denoised (1 = plain replacement with ancestral steps).
        jump: j, grid steps per jump back.
        method: the ``SAMPLERS`` name of each reverse step ``sample(denoiser, x, sigmas[i:i+2], method)``;
            the default ``ddpm`` is RePaint's own ancestral step, the DDPM posterior q(x_{s'} | x_s, x0 = D)
            (multistep samplers lose their history and act as one-step methods).
        generator: a Generator or one per example; every draw (start, known-region noise, steps) uses it.
    The output equals ``x_known`` on the mask exactly (the last step is to sigma = 0).
    """
    check_sigmas(sigmas)
    if sigmas[-1] != 0:
        raise ValueError(f"the RePaint grid must end at 0, got last sigma {sigmas[-1].item()}")
    sig = sigmas.to(torch.float64).tolist()
    known = x_known.to(torch.float64)
    m = _check_mask(mask, known)

    def noise() -> Tensor:
        return _randn(known.shape, generator, known.dtype, known.device)

    x = torch.where(m, known + sig[0] * noise(), sig[0] * noise())
    path = repaint_schedule(len(sig) - 1, resample, jump)
    for a, b in itertools.pairwise(path):
        if b > a:  # reverse step a -> b = a + 1
            grid = torch.tensor(sig[a : b + 1], dtype=torch.float64)
            x_unknown = sample(denoiser, x, grid, method, cond=cond, generator=generator).to(torch.float64)
            x_kn = known + sig[b] * noise() if sig[b] > 0 else known
            x = torch.where(m, x_kn, x_unknown)
        else:  # jump back b < a: forward kernel from sig[a] up to sig[b]
            x = x + math.sqrt(sig[b] ** 2 - sig[a] ** 2) * noise()
    return x
