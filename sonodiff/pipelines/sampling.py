"""The one generation routine shared by the trainer's demos and the user-facing pipelines.

noise (one generator per sample: sample k does not depend on the batch) -> sigma grid -> sampler with
classifier-free guidance wrapped around the denoiser -> features in diffusion space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sonodiff.core import sample
from sonodiff.core.cond import Cond
from sonodiff.core.schedules import model_sigmas

__all__ = ["generate_latents", "guided_denoiser", "seed_generators", "sampling_grid", "check_sampler_options",
           "CONDITIONING_INPUTS", "inference_values", "MicroBatched"]

# What each conditioner (a key for every name in sonodiff.conditioning.registry.CONDITIONERS) is given, per row:
#   "prompt":     the user's prompt at generation; the item's ``conditioning.field`` in training (label, caption,
#                 a number from meta.KEY)
#   "timing":     {"seconds_start", "seconds_total"} (Stable Audio): 0 and the requested duration at generation;
#                 the crop's start and the item's duration in training
#   "audio":      an audio clip (CLAP audio embeddings); not yet given by the trainer or the pipeline
#   "components": a dict of the components' inputs (composed)
CONDITIONING_INPUTS = {
    "class_label": "prompt",
    "sentence": "prompt",
    "clap_text": "prompt",
    "clip_text": "prompt",
    "t5": "prompt",
    "number": "prompt",
    "timing": "timing",
    "clap_audio": "audio",
    "clap_inhouse": "prompt",  # a text, or ("audio", clip [T], sample_rate): the in-house CLAP embeds both
    "composed": "components",
}


def conditioning_input(conditioner) -> str:
    """The kind of input ``conditioner`` takes (a value of :data:`CONDITIONING_INPUTS`)."""
    if conditioner.name not in CONDITIONING_INPUTS:  # a conditioner registered without saying what it takes
        raise ValueError(f"conditioner {conditioner.name!r} is not in sonodiff.pipelines.sampling.CONDITIONING_INPUTS; "
                         f"known: {sorted(CONDITIONING_INPUTS)}")
    return CONDITIONING_INPUTS[conditioner.name]


def takes_prompt(conditioner) -> bool:
    """Whether ``conditioner`` (or one of its components) is given the user's prompt."""
    kind = conditioning_input(conditioner)
    if kind == "components":
        return any(takes_prompt(c) for c in conditioner.parts.values())
    return kind == "prompt"


def inference_values(conditioner, prompt, duration_s: float, start_s: float = 0.0):
    """The conditioning value of one generated row: ``prompt`` for prompt conditioners, ``{"seconds_start":
    start_s, "seconds_total": duration_s}`` for timing (Evans et al. 2024: the window's offset in, and the length
    of, the whole output), a dict of these for a composed conditioner."""
    kind = conditioning_input(conditioner)
    if kind == "components":
        return {n: inference_values(c, prompt, duration_s, start_s) for n, c in conditioner.parts.items()}
    if kind == "timing":
        return {"seconds_start": float(start_s), "seconds_total": float(duration_s)}
    if kind == "audio":
        raise ValueError(f"this model is conditioned on audio ({conditioner.name!r}); the pipeline cannot take an "
                         "audio prompt yet")
    return prompt


def sampling_grid(schedule: str, num_steps: int, sigma_min: float, sigma_max: float,
                  options: dict | None = None) -> torch.Tensor:
    """The float64 grid ``schedule`` (any name in ``sonodiff.core.SCHEDULES``) for a model trained on
    ``[sigma_min, sigma_max]``, with the grid's ``options`` (e.g. ``{"rho": 5}``, ``{"shift": 3}``,
    ``{"beta_schedule": "cosine"}``); see :func:`sonodiff.core.schedules.model_sigmas`."""
    return model_sigmas(schedule, num_steps, sigma_min, sigma_max, **(options or {}))


def check_sampler_options(sampler: str, options: dict) -> dict:
    """Raise unless every key of ``options`` is a keyword option of sampler ``sampler`` (its function signature)."""
    from sonodiff.core.samplers import SAMPLERS, sampler_options

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid names: {sorted(SAMPLERS)}")
    if not isinstance(options, dict):
        raise ValueError(f"sampler_options must be a dict of option -> value, got {type(options).__name__}")
    valid = sorted(sampler_options(sampler))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"sampler {sampler!r} has no option(s) {unknown}; its options are {valid}")
    return dict(options)


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
                    guidance_interval: tuple[float, float] | None = None, cfg_rescale: float = 0.0,
                    max_rows: int | None = None, guide=None):
    """The denoiser the samplers call: micro-batched when ``max_rows`` is set, wrapped in classifier-free
    guidance when ``cond`` is given and ``guidance_scale != 1`` (limited to ``guidance_interval``, rescaled by
    ``cfg_rescale`` = phi of Lin et al. 2024 in x0 space). With a ``guide`` denoiser (a weaker model of the same
    task) the guidance is autoguidance instead (Karras et al. 2024): the guide's conditional estimate takes the
    place of the unconditional one, with the same scale, interval and rescale."""
    D = MicroBatched(denoiser, max_rows) if max_rows else denoiser
    if guide is not None:
        if negative is not None:
            raise ValueError("autoguidance (a guide model) takes no negative conditioning: the guide's own "
                             "conditional estimate is the negative branch")
        if guidance_scale == 1.0:
            return D
        from sonodiff.core.guidance import AutoGuidance

        G = MicroBatched(guide, max_rows) if max_rows else guide
        return AutoGuidance(D, G, guidance_scale, rescale=cfg_rescale, sigma_interval=guidance_interval)
    if cond is not None and guidance_scale != 1.0:
        from sonodiff.core.guidance import ClassifierFreeGuidance

        D = ClassifierFreeGuidance(D, guidance_scale, negative=negative, sigma_interval=guidance_interval,
                                   rescale=cfg_rescale)
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
    cfg_rescale: float = 0.0,
    num_steps: int = 25,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    schedule_options: dict | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    x_init: Tensor | None = None,
    callback=None,
    sampler_options: dict | None = None,
    device: torch.device | str = "cpu",
    max_rows: int | None = None,
    guide=None,
    score_guidance=None,
) -> Tensor:
    """Sample ``len(seeds)`` examples of ``shape`` (per example, ``[C, ...]``) -> ``[B, *shape]`` float32.

    ``cond``: conditioning of the B rows; ``negative``: negative conditioning replacing the unconditional branch
    (default: the learned null, ``cond.null_all()``); guidance applies when ``guidance_scale != 1`` and ``cond``
    is given; ``guidance_interval`` ``(lo, hi)`` limits it to noise levels lo < sigma <= hi (the unconditional
    branch is not evaluated outside); ``cfg_rescale``: guidance rescale phi in [0, 1] (Lin et al. 2024).
    ``schedule``, ``schedule_options``: the sigma grid (:func:`sampling_grid`); ``sampler_options``: the sampler's
    keyword options (checked against its signature).
    ``max_rows``: evaluate the network on at most this many rows at a time (:class:`MicroBatched`).
    ``guide``: a weaker denoiser of the same task: autoguidance instead of classifier-free guidance.
    ``x_init``: a start state at the grid's first sigma instead of fresh noise (editing).
    ``score_guidance``: ``(score_fn, scale)``: gradient guidance by a differentiable score of the denoised estimate
    (:class:`sonodiff.core.guidance.GradientGuidance`, e.g. a CLAP similarity), on top of the other guidance.
    """
    gens = seed_generators(list(seeds))
    sampler_options = check_sampler_options(sampler, sampler_options or {})
    sigmas = sampling_grid(schedule, num_steps, sigma_min, sigma_max, schedule_options)
    if x_init is None:  # the state at the grid's first noise level (not sigma_max: VP and flow grids start elsewhere)
        x = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens]) * sigmas[0]
    else:
        x = x_init.to(torch.float64)
    x = x.to(device)
    D = guided_denoiser(denoiser, cond, negative=negative, guidance_scale=guidance_scale,
                        guidance_interval=guidance_interval, cfg_rescale=cfg_rescale, max_rows=max_rows, guide=guide)
    if score_guidance is not None:
        from sonodiff.core.guidance import GradientGuidance

        fn, scale = score_guidance
        D = GradientGuidance(D, fn, scale)
    # Stochastic samplers draw from per-sample generators too (CPU generators; states move to device).
    out = sample(D, x, sigmas.to(device), sampler, cond=cond, generator=gens, callback=callback,
                 **sampler_options)
    return out.float()
