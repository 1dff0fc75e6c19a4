"""Probability-flow ODE samplers: dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 4 with s = 1).

Each is ``impl(run, x, **options)`` over the grid ``run.sigmas``; the public ``sample_<name>`` functions are
built in ``sonodiff.core.samplers``. Exponential-integrator methods (DPM-Solver++, UniPC) are written in
lambda = -log(sigma) (the log-SNR / 2 of the VE state); in data-prediction form the VP scale alpha_t
cancels, so these updates are exactly those of the papers' VP formulations applied to x_vp = x / sqrt(1 + s^2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sonodiff.core.samplers._run import Run, check_unit

__all__ = ["dpm2", "dpmpp_2m", "euler", "heun", "lms", "unipc"]


def euler(run: Run, x: Tensor) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Sec. 3; order 1). NFE = steps."""
    sig = run.sigmas
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        x = x + (s_next - s) * (x - d) / s
        x = run.end_step(i, x, d)
    return x


def heun(run: Run, x: Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Heun's 2nd-order method with EDM's stochastic churn (Karras et al. 2022, Algorithm 2).

    Where s_tmin <= sigma_i <= s_tmax the state is first raised to sigma_hat = sigma_i (1 + gamma),
    gamma = min(s_churn / N, sqrt(2) - 1), by adding noise of std s_noise sqrt(sigma_hat^2 - sigma_i^2).
    s_churn = 0 (default) is the deterministic ODE solver (order 2). The step to sigma = 0 is an Euler
    step. NFE = 2 steps - 1 when the grid ends at 0.
    """
    check_unit("s_churn", s_churn)
    check_unit("s_noise", s_noise)
    sig, n = run.sigmas, run.n_steps
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1.0 + gamma)
        if gamma > 0:
            x = x + s_noise * math.sqrt(s_hat**2 - s**2) * run.randn()
        d = run.denoise(x, s_hat, i)
        dx = (x - d) / s_hat
        x_next = x + (s_next - s_hat) * dx
        if s_next > 0:
            dx2 = (x_next - run.denoise(x_next, s_next, i)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (dx + dx2)
        x = run.end_step(i, x_next, d)
    return x


def dpm2(run: Run, x: Tensor) -> Tensor:
    """DPM-Solver-2 in sigma (Lu et al. 2022, Alg. 1, as k-diffusion's ``sample_dpm_2``): midpoint at the
    geometric mean sqrt(sigma_i sigma_{i+1}); Euler for the step to 0. Order 2; NFE = 2 steps - 1."""
    sig = run.sigmas
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        dx = (x - d) / s
        if s_next == 0:
            x = x + (s_next - s) * dx
        else:
            s_mid = math.sqrt(s * s_next)
            x_mid = x + (s_mid - s) * dx
            dx_mid = (x_mid - run.denoise(x_mid, s_mid, i)) / s_mid
            x = x + (s_next - s) * dx_mid
        x = run.end_step(i, x, d)
    return x


def _poly_mul(p: list[float], q: list[float]) -> list[float]:
    out = [0.0] * (len(p) + len(q) - 1)
    for a, pa in enumerate(p):
        for b, qb in enumerate(q):
            out[a + b] += pa * qb
    return out


def lms_coefficient(t: list[float], i: int, j: int, order: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of node t_{i-j} on nodes t_i .. t_{i-order+1}."""
    p = [1.0]  # coefficients, lowest degree first
    for k in range(order):
        if k != j:
            den = t[i - j] - t[i - k]
            p = _poly_mul(p, [-t[i - k] / den, 1.0 / den])
    anti = lambda tau: sum(c * tau ** (m + 1) / (m + 1) for m, c in enumerate(p))
    return anti(t[i + 1]) - anti(t[i])


def lms(run: Run, x: Tensor, *, order: int = 4) -> Tensor:
    """Linear multistep (Adams-Bashforth in sigma with variable steps; k-diffusion's ``sample_lms``).

    The derivative (x - D) / sigma is extrapolated by the Lagrange polynomial through the last ``order``
    evaluations and integrated exactly; the first steps use the orders available. NFE = steps.
    """
    if not isinstance(order, int) or not 1 <= order <= 6:
        raise ValueError(f"lms order must be an int in [1, 6], got {order!r}")
    sig, ds = run.sigmas, []
    for i in range(run.n_steps):
        d = run.denoise(x, sig[i], i)
        ds.append((x - d) / sig[i])
        ds = ds[-order:]
        cur = len(ds)
        coeffs = [lms_coefficient(sig, i, j, cur) for j in range(cur)]
        x = x + sum(c * dj for c, dj in zip(coeffs, reversed(ds)))
        x = run.end_step(i, x, d)
    return x


def dpmpp_2m(run: Run, x: Tensor) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, "DPM-Solver++", Alg. 2; data prediction, multistep order 2).

    With lambda = -log sigma, h = lambda_{i+1} - lambda_i, r = h_{i-1} / h:
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - expm1(-h) ((1 + 1/(2r)) D_i - 1/(2r) D_{i-1}).
    The first step and the step to 0 are first order. NFE = steps.
    """
    sig = run.sigmas
    old, h_last = None, None
    for i in range(run.n_steps):
        s, s_next = sig[i], sig[i + 1]
        d = run.denoise(x, s, i)
        if s_next == 0:
            x_new = d
        else:
            h = math.log(s) - math.log(s_next)
            dd = d if old is None else (1 + 1 / (2 * (h_last / h))) * d - (1 / (2 * (h_last / h))) * old
            x_new = (s_next / s) * x - math.expm1(-h) * dd
            h_last = h
        old = d
        x = run.end_step(i, x_new, d)
    return x


# =========================================================================== UniPC
def _unipc_terms(h: float, order: int, bh2: bool):
    """R rows, b and the phi / B(h) factors of UniPC (Zhao et al. 2023, Alg. 2-3 with data prediction)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1
    b_h = math.expm1(hh) if bh2 else hh
    b = []
    for k in range(1, order + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return b, h_phi_1, b_h


def _unipc_update(x_s0: Tensor, s0: float, s_t: float, ms: list[Tensor], lams: list[float], order: int, bh2: bool,
                  m_t: Tensor | None) -> Tensor:
    """UniP (m_t None) or UniC (m_t = D at the predicted state) from sigma s0 to s_t, with history ms/lams."""
    lam0, lam_t = lams[-1], -math.log(s_t)
    m0 = ms[-1]
    h = lam_t - lam0
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lams[-1 - k] - lam0) / h
        rks.append(rk)
        d1s.append((ms[-1 - k] - m0) / rk)
    rks.append(1.0)
    b, h_phi_1, b_h = _unipc_terms(h, order, bh2)
    R = torch.tensor([[rk ** (k - 1) for rk in rks] for k in range(1, order + 1)], dtype=torch.float64)
    bt = torch.tensor(b, dtype=torch.float64)
    x = (s_t / s0) * x_s0 - h_phi_1 * m0
    if m_t is None:  # predictor UniP-p
        if not d1s:
            return x
        rhos = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], bt[:-1]).tolist()
        return x - b_h * sum(r * d for r, d in zip(rhos, d1s))
    rhos = [0.5] if order == 1 else torch.linalg.solve(R, bt).tolist()  # corrector UniC-p
    res = sum((r * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(x)) + rhos[-1] * (m_t - m0)
    return x - b_h * res


def unipc(run: Run, x: Tensor, *, order: int = 2, solver_type: str = "bh2", corrector: bool = True,
          lower_order_final: bool = True) -> Tensor:
    """UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"): UniP-``order`` predictor
    with the UniC corrector, data prediction, B(h) = expm1(-h) (``bh2``, diffusers' default) or -h (``bh1``).

    UniC refines each predicted state with the model value already computed there (no extra NFE) and
    raises the order by one. Warm-up uses the orders available; with ``lower_order_final`` the order is
    capped by the steps left (diffusers' default); a step to 0 is first order. NFE = steps.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order!r}")
    if solver_type not in ("bh1", "bh2"):
        raise ValueError(f"unknown unipc solver_type {solver_type!r}; valid: ['bh1', 'bh2']")
    bh2, sig, n = solver_type == "bh2", run.sigmas, run.n_steps
    ms, lams = [], []
    x_last, this_order = None, 1
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        m = run.denoise(x, s, i)
        if corrector and x_last is not None:
            x = _unipc_update(x_last, sig[i - 1], s, ms, lams, this_order, bh2, m)
        ms, lams = (ms + [m])[-order:], (lams + [-math.log(s)])[-order:]
        this_order = min(order, n - i) if lower_order_final else order
        this_order = min(this_order, len(ms))
        if s_next == 0:
            this_order = 1
        x_last = x
        if s_next == 0:
            x_new = m
        else:
            x_new = _unipc_update(x, s, s_next, ms, lams, this_order, bh2, None)
        x = run.end_step(i, x_new, m)
    return x
