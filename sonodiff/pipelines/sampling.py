"""The one generation routine shared by the trainer's demos and the user-facing pipelines.

noise (one generator per sample: sample k does not depend on the batch) -> sigma grid -> sampler with
classifier-free guidance wrapped around the denoiser -> features in diffusion space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sonodiff.core import get_sigmas, sample
from sonodiff.core.cond import Cond

__all__ = ["generate_latents", "guided_denoiser", "seed_generators", "sampling_grid", "GRID_SCHEDULES", "MicroBatched"]

GRID_SCHEDULES = ("karras", "exponential", "logsnr")  # grids defined by a model's (sigma_min, sigma_max)


def sampling_grid(schedule: str, num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """A float64 grid from ``sigma_max`` down to ``sigma_min`` then 0, for the schedules a model's range defines."""
    if schedule not in GRID_SCHEDULES:
        raise ValueError(f"schedule {schedule!r} cannot be built from a sigma range; valid: {list(GRID_SCHEDULES)}")
    if schedule == "logsnr":
        import math

        return get_sigmas("logsnr", num_steps, logsnr_min=-2 * math.log(sigma_max), logsnr_max=-2 * math.log(sigma_min))
    return get_sigmas(schedule, num_steps, sigma_min=sigma_min, sigma_max=sigma_max)


class MicroBatched:
    """A denoiser evaluated on at most ``max_rows`` rows at a time (results identical up to float rounding).

    On CPU a U-Net is faster per example on small batches (the activations of a large batch fall out of cache:
    about 15% per example between 8 and 32 rows of corpus_sfx_mel on this project's 2-core machine), so the
    pipelines split the guided batch (2B rows) into chunks there."""

    def __init__(self, denoiser, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.denoiser, self.max_rows = denoiser, int(max_rows)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        B, m = x.shape[0], self.max_rows
        if B <= m:
            return self.denoiser(x, sigma, cond)
        return torch.cat([self.denoiser(x[i:i + m], sigma[i:i + m], None if cond is None else cond.index(slice(i, i + m)))
                          for i in range(0, B, m)])


def guided_denoiser(denoiser, cond: Cond | None, *, negative: Cond | None = None, guidance_scale: float = 1.0,
                    guidance_interval: tuple[float, float] | None = None, max_rows: int | None = None):
    """The denoiser the samplers call: micro-batched when ``max_rows`` is set, wrapped in classifier-free
    guidance when ``cond`` is given and ``guidance_scale != 1`` (limited to ``guidance_interval``)."""
    D = MicroBatched(denoiser, max_rows) if max_rows else denoiser
    if cond is not None and guidance_scale != 1.0:
        from sonodiff.core.guidance import ClassifierFreeGuidance

        D = ClassifierFreeGuidance(D, guidance_scale, negative=negative, sigma_interval=guidance_interval)
    return D


def seed_generators(seeds: list[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    if not seeds:
        raise ValueError("need at least one seed")
    bad = [s for s in seeds if not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative ints, got {bad}")
    return [torch.Generator(device).manual_seed(s) for s in seeds]


@torch.no_grad()
def generate_latents(
    denoiser,
    shape: tuple[int, ...],
    seeds: list[int],
    *,
    cond: Cond | None = None,
    negative: Cond | None = None,
    guidance_scale: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    num_steps: int = 25,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    x_init: Tensor | None = None,
    callback=None,
    sampler_options: dict | None = None,
    device: torch.device | str = "cpu",
    max_rows: int | None = None,
) -> Tensor:
    """Sample ``len(seeds)`` examples of ``shape`` (per example, ``[C, ...]``) -> ``[B, *shape]`` float32.

    ``cond``: conditioning of the B rows; ``negative``: negative conditioning replacing the unconditional branch
    (default: the learned null, ``cond.null_all()``); guidance applies when ``guidance_scale != 1`` and ``cond``
    is given; ``guidance_interval`` ``(lo, hi)`` limits it to noise levels lo < sigma <= hi (the unconditional
    branch is not evaluated outside).
    ``max_rows``: evaluate the network on at most this many rows at a time (:class:`MicroBatched`).
    ``x_init``: a start state at ``sigma_max`` instead of fresh noise (editing).
    """
    gens = seed_generators(list(seeds))
    if x_init is None:
        x = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens]) * sigma_max
    else:
        x = x_init.to(torch.float64)
    x = x.to(device)
    D = guided_denoiser(denoiser, cond, negative=negative, guidance_scale=guidance_scale,
                        guidance_interval=guidance_interval, max_rows=max_rows)
    sigmas = sampling_grid(schedule, num_steps, sigma_min, sigma_max)
    # Stochastic samplers draw from per-sample generators too (CPU generators; states move to device).
    out = sample(D, x, sigmas.to(device), sampler, cond=cond, generator=gens, callback=callback,
                 **(sampler_options or {}))
    return out.float()
