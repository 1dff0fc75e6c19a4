"""Forward processes and their conversion to the one sampling space of sonodiff: sigma (VE).

Every diffusion process sonodiff knows is a *scaled* variance-exploding (VE) process
(Karras et al. 2022, "Elucidating the Design Space...", Sec. 2 and Table 1):

    x_process(t) = s(t) * (x0 + sigma(t) * eps)        x_ve = x_process / s

- VE:   s = 1.                                               sigma is the noise level itself.
- VP:   x_t = sqrt(abar) x0 + sqrt(1 - abar) eps  ->  s = sqrt(abar), sigma = sqrt((1 - abar) / abar).
        DDPM (Ho et al. 2020) linear betas, Stable Diffusion's scaled-linear, the cosine schedule of
        Nichol & Dhariwal (2021) and a sigmoid schedule (Jabri et al. 2022).
- Flow: x_t = (1 - t) x0 + t eps (rectified flow; Liu et al. 2022, Lipman et al. 2022)
        ->  s = 1 - t, sigma = t / (1 - t), i.e. t = sigma / (1 + sigma).

Samplers only ever see the VE state x = x0 + sigma * eps; a model trained on another process is
sampled by converting its input with ``scale(sigma)`` inside its parameterization. Log-SNR is
lambda = log(alpha^2 / sigma_vp^2) = -2 log(sigma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from sonodiff.core.shapes import bcast

__all__ = [
    "Process",
    "PROCESSES",
    "get_process",
    "BETA_SCHEDULES",
    "vp_betas",
    "vp_alphas_cumprod",
    "alphas_cumprod_to_sigmas",
    "sigmas_to_alphas_cumprod",
    "vp_scale",
    "flow_t_to_sigma",
    "sigma_to_flow_t",
    "flow_scale",
    "logsnr",
    "sigma_from_logsnr",
    "sigma_to_timestep",
    "timestep_to_sigma",
]


# --------------------------------------------------------------------------- log-SNR
def logsnr(sigma: Tensor) -> Tensor:
    """Log signal-to-noise ratio lambda = -2 log(sigma) of a VE noise level ``sigma`` (any shape)."""
    return -2.0 * torch.log(sigma)


def sigma_from_logsnr(lam: Tensor) -> Tensor:
    """Inverse of :func:`logsnr`: sigma = exp(-lambda / 2)."""
    return torch.exp(-0.5 * lam)


# --------------------------------------------------------------------------- VP
def _betas_linear(n: int, beta_start: float, beta_end: float) -> Tensor:
    return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)


def _betas_scaled_linear(n: int, beta_start: float, beta_end: float) -> Tensor:
    # Stable Diffusion / diffusers "scaled_linear": linear in sqrt(beta).
    return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2


def _betas_cosine(n: int, beta_start: float, beta_end: float, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    # Nichol & Dhariwal (2021), eq. 17; betas clipped at 0.999 as in the paper (diffusers "squaredcos_cap_v2").
    def abar(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float64)


def _betas_sigmoid(n: int, beta_start: float, beta_end: float) -> Tensor:
    # diffusers/"GeoDiff" sigmoid betas: sigmoid(linspace(-6, 6)) rescaled to [beta_start, beta_end].
    x = torch.linspace(-6, 6, n, dtype=torch.float64)
    return torch.sigmoid(x) * (beta_end - beta_start) + beta_start


BETA_SCHEDULES: dict[str, Callable[[int, float, float], Tensor]] = {
    "linear": _betas_linear,
    "scaled_linear": _betas_scaled_linear,
    "cosine": _betas_cosine,
    "sigmoid": _betas_sigmoid,
}


def vp_betas(name: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    """Discrete VP betas ``[T]`` (float64) for a named schedule (``BETA_SCHEDULES``).

    Defaults are DDPM's (Ho et al. 2020): T=1000, beta from 1e-4 to 0.02. Stable Diffusion uses
    ``scaled_linear`` with 0.00085 .. 0.012. ``cosine`` ignores beta_start/beta_end.
    """
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; valid names: {sorted(BETA_SCHEDULES)}")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    if not 0.0 < beta_start < beta_end < 1.0 and name != "cosine":
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return BETA_SCHEDULES[name](num_train_timesteps, beta_start, beta_end)


def vp_alphas_cumprod(name: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s), ``[T]`` float64, decreasing."""
    return torch.cumprod(1.0 - vp_betas(name, num_train_timesteps, beta_start, beta_end), dim=0)


def alphas_cumprod_to_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """VE noise levels of a VP schedule: sigma = sqrt((1 - abar) / abar) (increasing in t)."""
    a = alphas_cumprod.to(torch.float64)
    return ((1.0 - a) / a).sqrt()


def sigmas_to_alphas_cumprod(sigmas: Tensor) -> Tensor:
    """Inverse of :func:`alphas_cumprod_to_sigmas`: abar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + sigmas.to(torch.float64) ** 2)


def vp_scale(sigma: Tensor) -> Tensor:
    """s(sigma) = sqrt(abar) = 1 / sqrt(1 + sigma^2): x_vp = s * x_ve."""
    return torch.rsqrt(1.0 + sigma**2)


def sigma_to_timestep(sigma: Tensor, train_sigmas: Tensor) -> Tensor:
    """Fractional discrete timestep of ``sigma`` on a training grid ``train_sigmas`` ``[T]`` (increasing).

    Linear interpolation in log(sigma) between neighbouring timesteps (as k-diffusion's DiscreteSchedule),
    clamped to [0, T-1]. Exact on the grid.
    """
    log_s = torch.log(sigma.to(torch.float64)).reshape(-1)
    log_grid = torch.log(train_sigmas.to(device=log_s.device, dtype=torch.float64))
    idx = torch.searchsorted(log_grid, log_s).clamp(1, len(log_grid) - 1)
    lo, hi = log_grid[idx - 1], log_grid[idx]
    w = ((log_s - lo) / (hi - lo)).clamp(0.0, 1.0)
    return ((idx - 1).to(torch.float64) + w).reshape(sigma.shape)


def timestep_to_sigma(t: Tensor, train_sigmas: Tensor) -> Tensor:
    """Inverse of :func:`sigma_to_timestep` (log-linear interpolation between integer timesteps)."""
    t = t.to(torch.float64)
    log_grid = torch.log(train_sigmas.to(device=t.device, dtype=torch.float64))
    lo = t.floor().long().clamp(0, len(log_grid) - 1)
    hi = (lo + 1).clamp(max=len(log_grid) - 1)
    w = t - lo.to(torch.float64)
    return torch.exp((1 - w) * log_grid[lo] + w * log_grid[hi])


# --------------------------------------------------------------------------- flow
def flow_t_to_sigma(t: Tensor) -> Tensor:
    """Flow time t in [0, 1) -> VE sigma = t / (1 - t)."""
    return t / (1.0 - t)


def sigma_to_flow_t(sigma: Tensor) -> Tensor:
    """VE sigma -> flow time t = sigma / (1 + sigma)."""
    return sigma / (1.0 + sigma)


def flow_scale(sigma: Tensor) -> Tensor:
    """s(sigma) = 1 - t = 1 / (1 + sigma): x_flow = s * x_ve."""
    return 1.0 / (1.0 + sigma)


# --------------------------------------------------------------------------- process table
@dataclass(frozen=True)
class Process:
    """A forward process as a scaled VE process: ``x_process = scale(sigma) * x_ve``."""

    name: Literal["ve", "vp", "flow"]
    scale: Callable[[Tensor], Tensor]

    def to_ve(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``x`` ``[B, ...]`` in this process's space at noise level ``sigma`` ``[B]`` -> VE state."""
        return x / bcast(self.scale(sigma), x).to(x.dtype)

    def from_ve(self, x: Tensor, sigma: Tensor) -> Tensor:
        """VE state ``x`` ``[B, ...]`` at ``sigma`` ``[B]`` -> this process's space."""
        return x * bcast(self.scale(sigma), x).to(x.dtype)


PROCESSES: dict[str, Process] = {
    "ve": Process("ve", lambda s: torch.ones_like(s)),
    "vp": Process("vp", vp_scale),
    "flow": Process("flow", flow_scale),
}


def get_process(name: str) -> Process:
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; valid names: {sorted(PROCESSES)}")
    return PROCESSES[name]
