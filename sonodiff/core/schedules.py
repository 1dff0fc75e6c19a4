"""Sampling grids (sigma schedules) and training noise densities.

Sampling grids are plain functions ``<name>_sigmas(num_steps, ...) -> Tensor [num_steps + 1]``: float64,
strictly decreasing, ending at exactly 0 (so ``num_steps`` steps, the last one to the clean signal).
``SCHEDULES`` maps each name to its function; :func:`get_sigmas` resolves a name once.

Training densities draw per-example noise levels ``sigma [B]`` (float64) for the loss; ``DENSITIES`` maps
their names. A ``shift`` multiplies every drawn sigma: for flow models this is exactly the SD3 timestep
shift t' = shift t / (1 + (shift - 1) t) (Esser et al. 2024, eq. 23), and :func:`length_shift` gives the
resolution/length-dependent factor for long signals.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import Tensor

from sonodiff.core.processes import (
    BETA_SCHEDULES,
    alphas_cumprod_to_sigmas,
    flow_t_to_sigma,
    vp_alphas_cumprod,
)

__all__ = [
    "karras_sigmas",
    "exponential_sigmas",
    "logsnr_sigmas",
    "linspace_sigmas",
    "leading_sigmas",
    "trailing_sigmas",
    "flow_sigmas",
    "vp_timesteps",
    "vp_schedule",
    "SCHEDULES",
    "get_sigmas",
    "schedule_options",
    "model_sigmas",
    "check_sigmas",
    "DENSITIES",
    "sample_sigmas",
    "lognormal_density",
    "uniform_discrete_density",
    "uniform_continuous_density",
    "logit_normal_density",
    "mode_density",
    "length_shift",
]

_F64 = torch.float64


def _append_zero(s: Tensor) -> Tensor:
    return torch.cat([s, s.new_zeros(1)])


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


# =========================================================================== sampling grids
def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022), eq. 5: sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    _check_steps(num_steps)
    _check_range(sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    ramp = torch.linspace(0, 1, num_steps, dtype=_F64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Geometric spacing (uniform in log sigma), as k-diffusion's ``get_sigmas_exponential``."""
    _check_steps(num_steps)
    _check_range(sigma_min, sigma_max)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_steps, dtype=_F64).exp())


def logsnr_sigmas(num_steps: int, logsnr_min: float, logsnr_max: float) -> Tensor:
    """Uniform in log-SNR lambda = -2 log sigma from ``logsnr_min`` (noisiest) to ``logsnr_max``.

    The same family as :func:`exponential_sigmas`, parameterized by log-SNR as in VDM (Kingma et al. 2021)
    and DPM-Solver's "logSNR" time steps (Lu et al. 2022).
    """
    _check_steps(num_steps)
    if not logsnr_min < logsnr_max:
        raise ValueError(f"need logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}")
    lam = torch.linspace(logsnr_min, logsnr_max, num_steps, dtype=_F64)
    return _append_zero(torch.exp(-0.5 * lam))


def vp_timesteps(num_steps: int, num_train_timesteps: int, spacing: str, steps_offset: int = 0) -> Tensor:
    """Integer timesteps (descending, int64) in the conventions of DDIM/diffusers users know.

    - ``linspace``: round(linspace(0, T-1, N)) reversed (Lu et al. 2022; Lin et al. 2024 Table 2).
    - ``leading``: arange(N) * (T // N) reversed, plus ``steps_offset`` (Stable Diffusion's default).
    - ``trailing``: round(arange(T, 0, -T/N)) - 1 (Lin et al. 2024, "Common diffusion noise schedules
      and sample steps are flawed": always starts at the last training step).
    """
    _check_steps(num_steps)
    T = num_train_timesteps
    if num_steps > T:
        raise ValueError(f"num_steps={num_steps} exceeds num_train_timesteps={T}")
    if spacing == "linspace":
        t = torch.linspace(0, T - 1, num_steps, dtype=_F64).round().flip(0)
    elif spacing == "leading":
        t = (torch.arange(num_steps, dtype=_F64) * (T // num_steps)).flip(0) + steps_offset
    elif spacing == "trailing":
        # T + k * (T/N - T)/... as a product, not torch.arange(T, 0, -T/N), which overshoots to -1 for some N
        # by accumulated rounding; round-half-even then matches numpy (diffusers) on the .5 ties.
        delta = (T - T / num_steps) - T
        t = (T + torch.arange(num_steps, dtype=_F64) * delta).round() - 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; valid: ['leading', 'linspace', 'trailing']")
    if t.max() > T - 1:
        raise ValueError(f"steps_offset={steps_offset} pushes timesteps past T-1={T - 1}")
    return t.long()


def vp_schedule(
    alphas_cumprod: Tensor | None = None,
    beta_schedule: str | None = None,
    num_train_timesteps: int | None = None,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> Tensor:
    """The alpha-bar ``[T]`` of a discrete VP model: given directly, or named by its beta schedule.

    Either ``alphas_cumprod`` (a tensor) or ``beta_schedule`` (a name in ``BETA_SCHEDULES``: linear, scaled_linear,
    cosine, sigmoid; with ``num_train_timesteps``, ``beta_start``, ``beta_end``, defaults DDPM's 1000, 1e-4, 0.02,
    see :func:`sonodiff.core.processes.vp_betas`), never both: the named form is what a JSON/TOML config or a
    command line can say.
    """
    named = {"num_train_timesteps": num_train_timesteps, "beta_start": beta_start, "beta_end": beta_end}
    if alphas_cumprod is not None:
        given = sorted(k for k, v in {"beta_schedule": beta_schedule, **named}.items() if v is not None)
        if given:
            raise ValueError(f"give alphas_cumprod or a beta schedule, not both (got alphas_cumprod and {given})")
        return alphas_cumprod
    if beta_schedule is None:
        raise ValueError("a VP grid or density needs the model's training schedule: alphas_cumprod (a tensor) or "
                         f"beta_schedule (one of {sorted(BETA_SCHEDULES)}, with optional num_train_timesteps, "
                         "beta_start, beta_end)")
    return vp_alphas_cumprod(beta_schedule, **{k: v for k, v in named.items() if v is not None})


def _vp_grid(num_steps: int, alphas_cumprod: Tensor, spacing: str, steps_offset: int) -> Tensor:
    train_sigmas = alphas_cumprod_to_sigmas(alphas_cumprod)
    t = vp_timesteps(num_steps, len(alphas_cumprod), spacing, steps_offset)
    return _append_zero(train_sigmas[t])


def _vp_spacing(spacing: str):
    """The sampling grid of a discrete VP model at ``spacing`` timesteps (one function per spacing)."""

    def grid(num_steps: int, alphas_cumprod: Tensor | None = None, steps_offset: int = 0, *,
             beta_schedule: str | None = None, num_train_timesteps: int | None = None,
             beta_start: float | None = None, beta_end: float | None = None) -> Tensor:
        abar = vp_schedule(alphas_cumprod, beta_schedule, num_train_timesteps, beta_start, beta_end)
        return _vp_grid(num_steps, abar, spacing, steps_offset)

    grid.__name__ = grid.__qualname__ = f"{spacing}_sigmas"
    grid.__doc__ = (f"Sigmas of a discrete VP model at ``{spacing}`` timesteps (see :func:`vp_timesteps`), then 0.\n\n"
                    "    The model's schedule is ``alphas_cumprod`` or a named beta schedule (:func:`vp_schedule`).")
    return grid


linspace_sigmas = _vp_spacing("linspace")
leading_sigmas = _vp_spacing("leading")
trailing_sigmas = _vp_spacing("trailing")


def flow_sigmas(num_steps: int, shift: float = 1.0, t_max: float = 1.0 - 1e-4) -> Tensor:
    """Flow-matching grid: t uniform from ``t_max`` to 0, shifted (SD3 eq. 23), as VE sigma = t / (1 - t).

    t = 1 (pure noise) is sigma = inf, which no VE state can hold, so the grid starts at ``t_max`` < 1
    (default 1 - 1e-4: the initial state differs from pure noise by 1e-4 of the data).
    """
    _check_steps(num_steps)
    if not 0 < t_max < 1:
        raise ValueError(f"t_max must be in (0, 1), got {t_max}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = torch.linspace(t_max, 0, num_steps + 1, dtype=_F64)[:-1]
    t = shift * t / (1 + (shift - 1) * t)
    return _append_zero(flow_t_to_sigma(t))


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "karras": karras_sigmas,
    "exponential": exponential_sigmas,
    "logsnr": logsnr_sigmas,
    "linspace": linspace_sigmas,
    "leading": leading_sigmas,
    "trailing": trailing_sigmas,
    "flow": flow_sigmas,
}


def get_sigmas(name: str, num_steps: int, **kwargs) -> Tensor:
    """Resolve a grid by name: ``get_sigmas("karras", 25, sigma_min=0.002, sigma_max=80)``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {sorted(SCHEDULES)}")
    fn = SCHEDULES[name]
    params = list(inspect.signature(fn).parameters)[1:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"schedule {name!r} got unknown argument(s) {unknown}; it takes {params}")
    return fn(num_steps, **kwargs)


def schedule_options(name: str) -> list[str]:
    """The keyword arguments grid ``name`` takes (after ``num_steps``), e.g. ``["sigma_min", "sigma_max", "rho"]``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {sorted(SCHEDULES)}")
    return list(inspect.signature(SCHEDULES[name]).parameters)[1:]


def model_sigmas(name: str, num_steps: int, sigma_min: float, sigma_max: float, **options) -> Tensor:
    """Grid ``name`` for a model trained on noise levels ``[sigma_min, sigma_max]``.

    ``karras`` and ``exponential`` run from sigma_max down to sigma_min, ``logsnr`` over the same range in
    log-SNR (lambda = -2 log sigma); ``options`` may set any argument of the grid, these ends included (e.g.
    ``rho``, ``sigma_max``). The VP grids (``linspace``, ``leading``, ``trailing``) are defined by the VP
    schedule they space (``beta_schedule``, ... see :func:`vp_schedule`) and ``flow`` by ``shift`` and
    ``t_max``, not by the model's range. Unknown options raise, naming the grid's arguments.
    """
    params = schedule_options(name)
    ends = {"sigma_min": sigma_min, "sigma_max": sigma_max}
    if "logsnr_min" in params:
        _check_range(sigma_min, sigma_max)
        ends = {"logsnr_min": -2 * math.log(sigma_max), "logsnr_max": -2 * math.log(sigma_min)}
    args = {k: v for k, v in ends.items() if k in params}
    return get_sigmas(name, num_steps, **{**args, **options})


def check_sigmas(sigmas: Tensor) -> Tensor:
    """Validate a sampling grid: 1-D, >= 2 entries, finite, non-negative, strictly decreasing."""
    if not isinstance(sigmas, Tensor):
        raise TypeError(f"sigmas must be a torch.Tensor, got {type(sigmas).__name__}")
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"sigmas must be finite, got {sigmas.tolist()}")
    if (sigmas < 0).any():
        raise ValueError(f"sigmas must be >= 0, got min {sigmas.min().item()}")
    d = sigmas[1:] - sigmas[:-1]
    if not (d < 0).all():
        i = int(torch.nonzero(d >= 0)[0])
        raise ValueError(
            f"sigmas must be strictly decreasing; sigmas[{i}]={sigmas[i].item()} <= sigmas[{i + 1}]={sigmas[i + 1].item()}"
        )
    return sigmas


# =========================================================================== training densities
def length_shift(length: int, base_length: int, base_shift: float = 1.0) -> float:
    """Noise shift for a signal of ``length`` elements relative to ``base_length``: base_shift * sqrt(length / base).

    Longer signals average out noise, so at the same sigma they look less noisy; multiplying sigma by
    sqrt(n / n0) keeps the per-"patch" SNR constant (Esser et al. 2024 Sec. 5.3.2; Hoogeboom et al. 2023).
    """
    if length <= 0 or base_length <= 0 or base_shift <= 0:
        raise ValueError(f"length, base_length and base_shift must be > 0; got {length}, {base_length}, {base_shift}")
    return base_shift * math.sqrt(length / base_length)


def _normal(batch_size: int, generator, device) -> Tensor:
    return torch.randn(batch_size, generator=generator, dtype=_F64, device=_gen_device(generator, device))


def _uniform(batch_size: int, generator, device) -> Tensor:
    return torch.rand(batch_size, generator=generator, dtype=_F64, device=_gen_device(generator, device))


def _gen_device(generator, device):
    return generator.device if generator is not None else device


def lognormal_density(batch_size: int, *, p_mean: float = -1.2, p_std: float = 1.2, generator=None, device="cpu") -> Tensor:
    """EDM (Karras et al. 2022, Table 1): ln(sigma) ~ N(P_mean, P_std^2)."""
    if p_std <= 0:
        raise ValueError(f"p_std must be > 0, got {p_std}")
    return (_normal(batch_size, generator, device) * p_std + p_mean).exp()


def uniform_discrete_density(batch_size: int, *, alphas_cumprod: Tensor | None = None, beta_schedule: str | None = None,
                             num_train_timesteps: int | None = None, beta_start: float | None = None,
                             beta_end: float | None = None, generator=None, device="cpu") -> Tensor:
    """DDPM (Ho et al. 2020): t ~ U{0, ..., T-1}, sigma = sqrt((1 - abar_t) / abar_t).

    The schedule is ``alphas_cumprod`` or a named beta schedule (:func:`vp_schedule`)."""
    abar = vp_schedule(alphas_cumprod, beta_schedule, num_train_timesteps, beta_start, beta_end)
    train_sigmas = alphas_cumprod_to_sigmas(abar)
    t = torch.randint(0, len(train_sigmas), (batch_size,), generator=generator, device=_gen_device(generator, device))
    return train_sigmas.to(t.device)[t]


def _continuous_abar(t: Tensor, schedule: str) -> Tensor:
    if schedule == "cosine":  # Nichol & Dhariwal (2021) eq. 17 in continuous time, s = 0.008
        s = 0.008
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return f / math.cos(s / (1 + s) * math.pi / 2) ** 2
    if schedule == "linear":  # Song et al. (2021) VP-SDE, beta_min = 0.1, beta_max = 20
        return torch.exp(-0.5 * t**2 * (20.0 - 0.1) - t * 0.1)
    raise ValueError(f"unknown continuous VP schedule {schedule!r}; valid: ['cosine', 'linear']")


def uniform_continuous_density(
    batch_size: int, *, schedule: str = "cosine", t_min: float = 1e-4, t_max: float = 0.9946, generator=None, device="cpu"
) -> Tensor:
    """Continuous-time VP: t ~ U(t_min, t_max), sigma = sqrt((1 - abar(t)) / abar(t)).

    ``t_max`` defaults below 1 because the cosine abar(1) = 0 (sigma = inf).
    """
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    t = t_min + (t_max - t_min) * _uniform(batch_size, generator, device)
    return alphas_cumprod_to_sigmas(_continuous_abar(t, schedule))


def logit_normal_density(batch_size: int, *, mean: float = 0.0, std: float = 1.0, generator=None, device="cpu") -> Tensor:
    """Rectified-flow logit-normal t (Esser et al. 2024, eq. 19): t = sigmoid(N(mean, std^2)); sigma = t / (1 - t)."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    # sigma = t / (1 - t) = exp(logit(t)): no need to pass through t.
    return (_normal(batch_size, generator, device) * std + mean).exp()


def mode_density(batch_size: int, *, scale: float = 1.29, generator=None, device="cpu") -> Tensor:
    """Mode sampling with heavy tails (Esser et al. 2024, eq. 20): t = 1 - u - s (cos^2(pi u / 2) - 1 + u)."""
    if not -1.0 <= scale <= 2.0 / (math.pi - 2.0):
        raise ValueError(f"mode scale must be in [-1, 2/(pi-2)] for a valid density, got {scale}")
    u = _uniform(batch_size, generator, device).clamp(1e-6, 1 - 1e-6)
    t = 1 - u - scale * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)
    t = t.clamp(1e-6, 1 - 1e-6)
    return flow_t_to_sigma(t)


DENSITIES: dict[str, Callable[..., Tensor]] = {
    "lognormal": lognormal_density,
    "uniform_discrete": uniform_discrete_density,
    "uniform_continuous": uniform_continuous_density,
    "logit_normal": logit_normal_density,
    "mode": mode_density,
}


def sample_sigmas(
    name: str, batch_size: int, *, shift: float = 1.0, generator: torch.Generator | None = None, device="cpu", **params
) -> Tensor:
    """Draw training noise levels ``sigma [B]`` (float64) from a named density, times ``shift``."""
    if name not in DENSITIES:
        raise ValueError(f"unknown noise density {name!r}; valid names: {sorted(DENSITIES)}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    fn = DENSITIES[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("batch_size", "generator", "device")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"density {name!r} got unknown parameter(s) {unknown}; it takes {allowed} and shift")
    return fn(batch_size, generator=generator, device=device, **params) * shift
