"""Stochastic samplers: ancestral (DDPM / DDIM / Euler ancestral) and DPM-Solver++ SDE (2M, 3M).

Each is ``impl(run, x, **options)``. ``s_noise`` scales every injected noise (a temperature; 1 = the exact
sampler). ``noise_sampler(sigma, sigma_next) -> [B, ...]`` standard normal may be given explicitly (tests,
shared noise); by default ancestral samplers draw fresh per-example noise each step and the SDE solvers
use a Brownian tree (:mod:`sonodiff.core.noise`), so a seed gives the same Brownian path whatever the grid.
"""

from __future__ import annotations

import math

from torch import Tensor

from sonodiff.core.noise import NoiseSampler
from sonodiff.core.samplers._run import Run, check_unit

__all__ = ["ancestral", "ddim", "ddpm", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral"]


def ancestral(run: Run, x: Tensor, eta: float, s_noise: float, noise_sampler: NoiseSampler | None) -> Tensor:
    """x_{i+1} = D + (sigma_down / sigma) (x - D) + s_noise sigma_up z, sigma_up = eta sigma' sqrt(1 - sigma'^2/sigma^2),
    sigma_down = sqrt(sigma'^2 - sigma_up^2).

    In VE terms this one step is DDIM (Song et al. 2021a, eq. 12: x' = x0 + sqrt(sigma'^2 - c^2) eps_hat + c z,
    c^2 = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2), Euler ancestral (k-diffusion) and, at eta = 1,
    the DDPM posterior q(x_{sigma'} | x_sigma, x0 = D) (Ho et al. 2020, eq. 6-7 with the posterior variance).
    """
    eta = check_unit("eta", eta, 0.0, 1.0)
    s_noise = check_unit("s_noise", s_noise)
    noise = noise_sampler or run.step_noise()
    sig = run.sigmas
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        if s_next == 0:
            x_new = d
        else:
            up = eta * s_next * math.sqrt(1.0 - (s_next / s) ** 2)
            down = math.sqrt(max(s_next**2 - up**2, 0.0))
            x_new = d + (down / s) * (x - d)
            if up > 0 and s_noise > 0:
                x_new = x_new + (s_noise * up) * noise(s, s_next)
        x = run.end_step(i, x_new, d)
    return x


def ddpm(run: Run, x: Tensor, *, s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on any sigma grid: the posterior q(x_{s'} | x_s, x0_hat)
    with mean x0_hat + (s'^2 / s^2)(x - x0_hat) and variance s'^2 (s^2 - s'^2) / s^2 (VE form). NFE = steps."""
    return ancestral(run, x, 1.0, s_noise, noise_sampler)


def ddim(run: Run, x: Tensor, *, eta: float = 0.0, s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DDIM (Song et al. 2021a, eq. 12) with eta in [0, 1]; eta = 0 is deterministic (and equals Euler in VE,
    Karras et al. 2022 Sec. 3), eta = 1 is DDPM. NFE = steps."""
    return ancestral(run, x, eta, s_noise, noise_sampler)


def euler_ancestral(run: Run, x: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                    noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``): an Euler step to sigma_down, then noise
    sigma_up (see :func:`ancestral`; identical to DDIM with the same eta). NFE = steps."""
    return ancestral(run, x, eta, s_noise, noise_sampler)


def dpmpp_2m_sde(run: Run, x: Tensor, *, eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint",
                 noise_sampler: NoiseSampler | None = None) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, "DPM-Solver++", Sec. 5 and App.; k-diffusion ``sample_dpmpp_2m_sde``).

    With h = lambda' - lambda, lambda = -log sigma, eta h the SDE part:
    x' = (sigma'/sigma) e^{-eta h} x + (1 - e^{-(1+eta) h}) D + correction + s_noise sigma' sqrt(1 - e^{-2 eta h}) z,
    the 2nd-order correction (D - D_prev) / r times 0.5 (1 - e^{-(1+eta)h}) (``midpoint``, diffusers' default)
    or 1 - (1 - e^{-(1+eta)h}) / ((1+eta)h) (``heun``). eta = 0 is DPM-Solver++(2M). NFE = steps.
    """
    eta = check_unit("eta", eta)
    s_noise = check_unit("s_noise", s_noise)
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"unknown solver_type {solver_type!r}; valid: ['heun', 'midpoint']")
    noise = None
    sig = run.sigmas
    old, h_last = None, None
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        if s_next == 0:
            x_new = d
        else:
            h = math.log(s) - math.log(s_next)
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)
            x_new = (s_next / s) * math.exp(-eta_h) * x + phi * d
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x_new = x_new + (phi / (-h - eta_h) + 1.0) * (1.0 / r) * (d - old)
                else:
                    x_new = x_new + 0.5 * phi * (1.0 / r) * (d - old)
            if eta > 0 and s_noise > 0:
                noise = noise or noise_sampler or run.brownian_noise()
                x_new = x_new + noise(s, s_next) * (s_next * math.sqrt(-math.expm1(-2.0 * eta_h)) * s_noise)
            h_last = h
        old = d
        x = run.end_step(i, x_new, d)
    return x


def dpmpp_3m_sde(run: Run, x: Tensor, *, eta: float = 1.0, s_noise: float = 1.0, d2_weight: str = "taylor",
                 noise_sampler: NoiseSampler | None = None) -> Tensor:
    """SDE-DPM-Solver++(3M) (Lu et al. 2022b; k-diffusion ``sample_dpmpp_3m_sde``): third-order multistep
    exponential integrator with SDE noise of strength eta; eta = 0 is the ODE solver DPM-Solver++(3M).
    The first two steps use orders 1 and 2; the step to 0 returns D. NFE = steps.

    ``d2_weight``: the second-difference estimate D2 = (D1_0 - D1_1) / (r0 + r1) approximates h^2 D''/2, whose
    exact exponential-integrator weight is -2 phi_3 = 1 - 2 (e^{-h} - 1 + h) / h^2 (``taylor``, default: the
    method then converges with order 3, tests/core/test_samplers_ode.py). The reference implementations
    (DPM-Solver, k-diffusion, diffusers' ``DPMSolverMultistepScheduler`` order 3) weight it by -phi_3, half
    of that, which leaves the method second order; ``reference`` reproduces them exactly.
    """
    if d2_weight not in ("taylor", "reference"):
        raise ValueError(f"unknown d2_weight {d2_weight!r}; valid: ['reference', 'taylor']")
    eta = check_unit("eta", eta)
    s_noise = check_unit("s_noise", s_noise)
    noise = None
    sig = run.sigmas
    d1 = d2 = None
    h1 = h2 = None
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        h = None
        if s_next == 0:
            x_new = d
        else:
            h = math.log(s) - math.log(s_next)
            h_eta = h * (eta + 1.0)
            x_new = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * d  # e^{-h} = sigma'/sigma
            phi_2 = math.expm1(-h_eta) / h_eta + 1.0
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                d1_0 = (d - d1) / r0
                d1_1 = (d1 - d2) / r1
                dd1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                dd2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = (phi_2 / h_eta - 0.5) * (2.0 if d2_weight == "taylor" else 1.0)
                x_new = x_new + phi_2 * dd1 - phi_3 * dd2
            elif h1 is not None:
                x_new = x_new + phi_2 * ((d - d1) / (h1 / h))
            if eta > 0 and s_noise > 0:
                noise = noise or noise_sampler or run.brownian_noise()
                x_new = x_new + noise(s, s_next) * (s_next * math.sqrt(-math.expm1(-2.0 * h * eta)) * s_noise)
        d1, d2 = d, d1
        h1, h2 = h, h1
        x = run.end_step(i, x_new, d)
    return x
