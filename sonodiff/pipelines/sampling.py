"""The one generation routine shared by the trainer's demos and the user-facing pipelines.

noise (one generator per sample: sample k does not depend on the batch) -> sigma grid -> sampler with
classifier-free guidance wrapped around the denoiser -> features in diffusion space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sonodiff.core import get_sigmas, sample
from sonodiff.core.cond import Cond

__all__ = ["generate_latents", "seed_generators"]


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
    uncond: Cond | None = None,
    guidance_scale: float = 1.0,
    num_steps: int = 25,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    x_init: Tensor | None = None,
    callback=None,
    sampler_options: dict | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Sample ``len(seeds)`` examples of ``shape`` (per example, ``[C, ...]``) -> ``[B, *shape]`` float32.

    ``cond`` / ``uncond``: conditioning of the B rows and its unconditional counterpart (default
    ``cond.null_all()``); guidance applies when ``guidance_scale != 1`` and ``cond`` is given.
    ``x_init``: a start state at ``sigma_max`` instead of fresh noise (editing).
    """
    gens = seed_generators(list(seeds))
    B = len(gens)
    if x_init is None:
        x = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens]) * sigma_max
    else:
        x = x_init.to(torch.float64)
    x = x.to(device)
    D = denoiser
    if cond is not None and guidance_scale != 1.0:
        from sonodiff.core.guidance import ClassifierFreeGuidance

        D = ClassifierFreeGuidance(denoiser, guidance_scale, uncond=uncond)
    if schedule in ("karras", "exponential"):
        sigmas = get_sigmas(schedule, num_steps, sigma_min=sigma_min, sigma_max=sigma_max)
    else:
        sigmas = get_sigmas(schedule, num_steps)
    # Stochastic samplers draw from per-sample generators too (CPU generators; states move to device).
    out = sample(D, x, sigmas.to(device), sampler, cond=cond, generator=gens if B > 1 else gens[0],
                 callback=callback, **(sampler_options or {}))
    return out.float()
