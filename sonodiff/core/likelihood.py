"""Likelihoods: the probability-flow ODE log-density and the discrete DDPM variational bound.

**Probability-flow ODE** (Song et al. 2021, "Score-based generative modeling through SDEs", App. D.2;
instantaneous change of variables of Chen et al. 2018, "Neural ODEs"). In VE space the ODE is
dx/dsigma = f(x, sigma) = (x - D(x, sigma)) / sigma, and along a solution d/dsigma log p_sigma(x(sigma)) =
-div f. Integrating from sigma_min (the data end) to sigma_max (the prior end):

    log p_{sigma_min}(x(sigma_min)) = log p_{sigma_max}(x(sigma_max)) + int_{sigma_min}^{sigma_max} div f dsigma.

This is the log-density of the *noised* marginal p_{sigma_min} at the given point, which tends to the data
density as sigma_min -> 0. We integrate in u = log sigma, where the system is smooth:

    dx/du = x - D(x, e^u),          d ell/du = sigma div f = dim - div_x D(x, e^u),

and approximate p_{sigma_max} by N(prior_mean, (sigma_max^2 + sigma_data^2) I) (exact up to
O(Var[x0] / sigma_max^2) per dim, plus O(|E[x0] - prior_mean| / sigma_max): pass the data mean). ``div_x D``
is computed exactly ("exact": tr J = sum_i e_i^T J e_i, the dim unit vectors stacked along the batch so that
one denoiser call on dim * B rows and one backward pass give it; for small dims) or estimated by Hutchinson's trace
estimator (Hutchinson 1989; FFJORD, Grathwohl et al. 2019): div D = E[v^T (dD/dx) v] with Rademacher or
Gaussian probes v held fixed along the path (the x path does not depend on them, so the integral estimate is
unbiased). K probes give K independent estimates; their standard error is returned.

**Discrete ELBO** (Ho et al. 2020, eq. 5): the DDPM variational bound
L = L_T + sum_{t=2}^T L_{t-1} + L_0 with Gaussian reverse kernels of mean mu~(x_t, x0_hat) and a fixed
variance (beta~_t "small" or beta_t "large"), computed in nats with one noise draw per timestep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sonodiff.core.cond import Cond
from sonodiff.core.shapes import bcast

__all__ = ["ELBOResult", "LikelihoodResult", "bits_per_dim", "discrete_elbo", "log_likelihood"]

Denoiser = Callable[[Tensor, Tensor, "Cond | None"], Tensor]
_LN2 = math.log(2.0)


def bits_per_dim(log_likelihood: Tensor, dim: int, *, data_scale: float = 1.0) -> Tensor:
    """Negative log-likelihood in bits per dimension: -(log p + dim log(data_scale)) / (dim ln 2).

    ``log_likelihood`` ``[B]`` in nats of the data as the model sees it; ``data_scale`` is the factor from the
    original units to the model's (x_model = data_scale x_orig, e.g. 1/127.5 for [0, 255] data mapped to
    [-1, 1]): densities transform as p_orig = p_model * data_scale^dim. For densities this is a
    continuous-data figure (dequantize 8-bit data before comparing with discrete bits/dim).
    """
    if dim <= 0 or data_scale <= 0:
        raise ValueError(f"dim and data_scale must be > 0, got {dim}, {data_scale}")
    return -(log_likelihood + dim * math.log(data_scale)) / (dim * _LN2)


# =========================================================================== result types
@dataclass(frozen=True)
class LikelihoodResult:
    """Output of :func:`log_likelihood`. Tensors ``[B]`` float64, nats.

    log_likelihood: estimate of log p_{sigma_min}(x); stderr: its standard error (0 for "exact");
    prior_logp: log N(x(sigma_max)); delta_logp: the integrated divergence term; nfe: denoiser calls (each on
    dim * B rows for "exact", num_probes * B for "hutchinson"); dim: elements per example.
    """

    log_likelihood: Tensor
    stderr: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: int
    dim: int

    def bits_per_dim(self, data_scale: float = 1.0) -> Tensor:
        return bits_per_dim(self.log_likelihood, self.dim, data_scale=data_scale)


@dataclass(frozen=True)
class ELBOResult:
    """Output of :func:`discrete_elbo`. Tensors ``[B]`` float64, nats; nll_bound = prior + diffusion + decoder
    >= -log p_model(x0) (a density bound for the "gaussian" decoder, a probability-mass bound for "discretized").
    """

    nll_bound: Tensor
    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    dim: int

    def bits_per_dim(self, data_scale: float = 1.0) -> Tensor:
        """Bound in bits/dim (use data_scale = 1 for the discretized decoder: it is already a mass)."""
        return bits_per_dim(-self.nll_bound, self.dim, data_scale=data_scale)


# =========================================================================== ODE solvers (float64)
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def _dopri5(f, y: Tensor, u0: float, u1: float, atol: float, rtol: float, max_steps: int) -> Tensor:
    """Adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) with FSAL, one step size for the whole batch."""
    u, h = u0, (u1 - u0) / 20
    k1 = f(u, y)
    for _ in range(max_steps):
        if u >= u1:
            return y
        h = min(h, u1 - u)
        ks = [k1]
        for i in range(1, 7):
            yi = y + h * sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(u + _DP_C[i] * h, yi))
        y5 = y + h * sum(b * k for b, k in zip(_DP_B5, ks) if b != 0.0)
        y4 = y + h * sum(b * k for b, k in zip(_DP_B4, ks) if b != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y5.abs())
        err = float(((y5 - y4) / scale).pow(2).mean().sqrt())
        if err <= 1.0:
            u, y, k1 = u + h, y5, ks[6]
        h = h * min(10.0, max(0.2, 0.9 * (err if err > 0 else 1e-10) ** -0.2))
    raise RuntimeError(f"Dormand-Prince did not reach the end in {max_steps} steps (atol={atol}, rtol={rtol})")


def _rk4(f, y: Tensor, u0: float, u1: float, num_steps: int) -> Tensor:
    h = (u1 - u0) / num_steps
    for i in range(num_steps):
        u = u0 + i * h
        k1 = f(u, y)
        k2 = f(u + h / 2, y + h / 2 * k1)
        k3 = f(u + h / 2, y + h / 2 * k2)
        k4 = f(u + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


# =========================================================================== ODE likelihood
def log_likelihood(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    sigma_min: float,
    sigma_max: float,
    cond: Cond | None = None,
    method: Literal["exact", "hutchinson"] = "exact",
    num_probes: int = 8,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    generator: torch.Generator | None = None,
    solver: Literal["dopri5", "rk4"] = "dopri5",
    atol: float = 1e-6,
    rtol: float = 1e-6,
    num_steps: int = 100,
    max_steps: int = 10_000,
    prior_mean: float | Tensor = 0.0,
    sigma_data: float = 0.0,
) -> LikelihoodResult:
    """log p_{sigma_min}(x0) through the probability-flow ODE (see the module docstring).

    Args:
        denoiser: ``D(x [B, ...], sigma [B], cond) -> x0_hat``, differentiable in ``x``.
        x0: ``[B, ...]`` the points, read as states at ``sigma_min``.
        sigma_min, sigma_max: integration range, 0 < sigma_min < sigma_max.
        method: "exact" divergence (each evaluation calls the denoiser once on dim * B rows) or "hutchinson"
            with ``num_probes`` probes (``probe`` "rademacher" or "gaussian", drawn from ``generator``; each
            evaluation on num_probes * B rows). ``cond`` is repeated along the batch to match.
        solver: "dopri5" (adaptive, ``atol``/``rtol``, at most ``max_steps`` steps) or "rk4" (``num_steps``
            fixed steps in log sigma).
        prior_mean, sigma_data: the prior is N(prior_mean, (sigma_max^2 + sigma_data^2) I); prior_mean a float
            or a tensor broadcastable to ``x0[0]``.
    Returns a :class:`LikelihoodResult` (nats; ``.bits_per_dim()``).
    """
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"unknown divergence method {method!r}; valid: ['exact', 'hutchinson']")
    if solver not in ("dopri5", "rk4"):
        raise ValueError(f"unknown solver {solver!r}; valid: ['dopri5', 'rk4']")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"unknown probe {probe!r}; valid: ['gaussian', 'rademacher']")
    if method == "hutchinson" and num_probes < 2:
        raise ValueError(f"hutchinson needs num_probes >= 2 to state a standard error, got {num_probes}")
    B, shape = x0.shape[0], x0.shape
    dim = x0[0].numel()
    dev = x0.device
    K = num_probes if method == "hutchinson" else 1
    probes = None
    if method == "hutchinson":
        g_dev = generator.device if generator is not None else dev
        if probe == "rademacher":
            probes = torch.randint(0, 2, (K,) + tuple(shape), generator=generator, device=g_dev).to(dev, torch.float64) * 2 - 1
        else:
            probes = torch.randn((K,) + tuple(shape), generator=generator, device=g_dev, dtype=torch.float64).to(dev)
    nfe = 0  # denoiser calls, each on a batch of R * B (R = dim for "exact", num_probes for "hutchinson")

    # Probes as R copies of the batch, all differentiated in ONE backward pass of a batch R*B:
    # exact: R = dim unit vectors e_i (sum_i e_i^T J e_i = tr J); hutchinson: R = K random probes.
    R = dim if method == "exact" else K
    if method == "exact":
        V = torch.eye(dim, dtype=torch.float64, device=dev).unsqueeze(1).expand(dim, B, dim).reshape((R,) + tuple(shape))
    else:
        V = probes
    V = V.reshape((R * B,) + tuple(shape[1:]))
    cond_r = None if cond is None else Cond.cat([cond] * R)

    def f(u: float, y: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        x = y[:, :dim].reshape(shape)
        sigma = torch.full((R * B,), math.exp(u), dtype=torch.float64, device=dev)
        with torch.enable_grad():
            xr = x.detach().repeat((R,) + (1,) * (x.ndim - 1)).requires_grad_(True)
            d = denoiser(xr, sigma, cond_r)
            if d.shape != xr.shape:
                raise RuntimeError(f"denoiser returned shape {tuple(d.shape)} for input {tuple(xr.shape)}")
            if not torch.isfinite(d).all():
                raise RuntimeError(f"denoiser returned non-finite values at sigma={math.exp(u):.4g}")
            (vj,) = torch.autograd.grad((d * V.to(d.dtype)).sum(), xr)
        vjv = (vj.to(torch.float64) * V).reshape(R, B, dim).sum(-1)  # [R, B]: v^T (dD/dx) v
        div = vjv.sum(0, keepdim=True).T if method == "exact" else vjv.T  # [B, 1] or [B, K]
        dx = (x - d[:B].detach().to(torch.float64)).reshape(B, dim)
        return torch.cat([dx, dim - div], dim=1)

    y0 = torch.cat([x0.detach().to(torch.float64).reshape(B, dim), torch.zeros(B, K, dtype=torch.float64, device=dev)], 1)
    u0, u1 = math.log(sigma_min), math.log(sigma_max)
    if solver == "dopri5":
        y1 = _dopri5(f, y0, u0, u1, atol, rtol, max_steps)
    else:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        y1 = _rk4(f, y0, u0, u1, num_steps)
    x1 = y1[:, :dim]
    var = sigma_max**2 + sigma_data**2
    mean = torch.as_tensor(prior_mean, dtype=torch.float64, device=dev)
    mean = torch.broadcast_to(mean, shape[1:]).reshape(1, dim)
    prior = -0.5 * (((x1 - mean) ** 2).sum(1) / var + dim * math.log(2 * math.pi * var))
    ell = y1[:, dim:]  # [B, K]
    delta = ell.mean(1)
    stderr = ell.std(1) / math.sqrt(K) if K > 1 else torch.zeros_like(delta)
    return LikelihoodResult(prior + delta, stderr, prior, delta, nfe, dim)


# =========================================================================== discrete ELBO
def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def discrete_elbo(
    denoiser: Denoiser,
    x0: Tensor,
    alphas_cumprod: Tensor,
    *,
    cond: Cond | None = None,
    variance: Literal["small", "large"] = "small",
    decoder: Literal["gaussian", "discretized"] = "gaussian",
    generator: torch.Generator | None = None,
    timesteps_per_call: int = 1,
) -> ELBOResult:
    """The DDPM variational bound (Ho et al. 2020, eq. 5) of ``x0`` ``[B, ...]``, in nats per example.

    The model is the discrete VP chain of ``alphas_cumprod`` ``[T]`` (abar_1 ... abar_T) whose reverse kernel
    p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), s_t^2 I) uses the denoiser's estimate x0_hat = D(x_t / sqrt(abar_t),
    sigma_t, cond) at sigma_t = sqrt((1 - abar_t) / abar_t) (so an eps model enters through
    ``Preconditioned(net, "eps")`` or :func:`sonodiff.core.denoiser.discrete_vp_denoiser`), and
    s_t^2 = beta~_t ("small", the true posterior variance) or beta_t ("large").

    - L_T = KL(q(x_T | x0) || N(0, I)).
    - L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t = 2..T, exact given x_t, with one draw of
      x_t ~ q(x_t | x0) per t (unbiased for the expectation over x_t); T timesteps are evaluated in all.
    - L_0 = -log p(x0 | x_1) with mean x0_hat(x_1) and variance beta_1 ("large") or beta~_2 ("small": beta~_1 = 0;
      the clipped choice of Nichol & Dhariwal 2021). ``decoder="gaussian"``: a continuous Gaussian density
      (the bound is then on a density); ``decoder="discretized"``: Ho et al. eq. 13 for 8-bit data scaled to
      [-1, 1] (bins of width 2/255, open-ended at +-1; the bound is then on a probability mass, and x0 must lie
      on the 256-level grid).

    With the exact denoiser of Gaussian data and T = 1000, "large" is nearly tight (0.001 nats above the
    entropy for DDPM's linear betas), while "small" leaves ~0.5 nat/dim (its decoder variance beta~_2 and the
    posterior-variance mismatch near t = 0); see tests/core/test_likelihood.py.

    ``timesteps_per_call`` evaluates that many timesteps in one denoiser call on a batch of
    timesteps_per_call * B (T / timesteps_per_call calls in all); the noise draws then depend on it.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"unknown reverse variance {variance!r}; valid: ['large', 'small']")
    if decoder not in ("gaussian", "discretized"):
        raise ValueError(f"unknown decoder {decoder!r}; valid: ['discretized', 'gaussian']")
    if timesteps_per_call < 1:
        raise ValueError(f"timesteps_per_call must be >= 1, got {timesteps_per_call}")
    abar = alphas_cumprod.to(device=x0.device, dtype=torch.float64)
    T = len(abar)
    if abar.ndim != 1 or T < 2 or not (bool((abar[1:] < abar[:-1]).all()) and bool(((abar > 0) & (abar < 1)).all())):
        raise ValueError("alphas_cumprod must be 1-D, strictly decreasing, inside (0, 1), with >= 2 entries")
    B, dim = x0.shape[0], x0[0].numel()
    x = x0.detach().to(torch.float64)
    if decoder == "discretized":
        if x.min() < -1 or x.max() > 1:
            raise ValueError(f"the discretized decoder needs data in [-1, 1], got range [{x.min().item()}, {x.max().item()}]")
        levels = (x + 1) * 127.5
        if (levels - levels.round()).abs().max() > 1e-4:
            raise ValueError("the discretized decoder needs 8-bit data: x0 = k / 127.5 - 1 for integer k in [0, 255]")
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1.0 - abar / abar_prev
    beta_tilde = (1.0 - abar_prev) / (1.0 - abar) * beta
    sigmas = ((1.0 - abar) / abar).sqrt()
    dims = tuple(range(1, x.ndim))

    def x0_hats(idx: list[int]) -> Tensor:
        """x0_hat at timesteps ``idx`` (one fresh x_t ~ q(x_t | x0) each) in one call: [len(idx), B, ...]."""
        c = len(idx)
        g_dev = generator.device if generator is not None else x.device
        eps = torch.randn((c,) + tuple(x.shape), generator=generator, dtype=torch.float64, device=g_dev).to(x.device)
        s = sigmas[idx]  # [c]
        xt = (x.unsqueeze(0) + bcast(s, eps) * eps).reshape((c * B,) + tuple(x.shape[1:]))
        d = denoiser(xt, s.repeat_interleave(B), None if cond is None else Cond.cat([cond] * c))
        if d.shape != xt.shape or not torch.isfinite(d).all():
            raise RuntimeError(f"denoiser returned shape {tuple(d.shape)} / non-finite values at timesteps {idx}")
        return d.to(torch.float64).reshape((c,) + tuple(x.shape))

    # L_T: KL(N(sqrt(abar_T) x0, (1 - abar_T) I) || N(0, I))
    aT = abar[-1]
    prior = 0.5 * (aT * x**2 + (1 - aT) - 1 - torch.log(1 - aT)).sum(dims)

    # L_{t-1}, t = 2..T (index i = t - 1 = 1..T-1), and the decoder mean x0_hat(x_1) (index 0)
    diffusion = torch.zeros(B, dtype=torch.float64, device=x.device)
    mean = None
    for start in range(0, T, timesteps_per_call):
        idx = list(range(start, min(T, start + timesteps_per_call)))
        hats = x0_hats(idx)
        for j, i in enumerate(idx):
            if i == 0:
                mean = hats[j]
                continue
            c0 = abar_prev[i].sqrt() * beta[i] / (1 - abar[i])
            var_q = beta_tilde[i]
            var_p = var_q if variance == "small" else beta[i]
            mse = ((c0 * (x - hats[j])) ** 2).sum(dims)
            diffusion += 0.5 * (dim * (torch.log(var_p / var_q) + var_q / var_p - 1) + mse / var_p)

    # L_0
    var_dec = beta_tilde[1] if variance == "small" else beta[0]
    std = var_dec.sqrt()
    if decoder == "gaussian":
        dec = 0.5 * (((x - mean) ** 2) / var_dec + torch.log(2 * math.pi * var_dec)).sum(dims)
    else:
        upper = torch.where(x >= 1 - 1e-6, torch.ones_like(x), _normal_cdf((x + 1 / 255 - mean) / std))
        lower = torch.where(x <= -1 + 1e-6, torch.zeros_like(x), _normal_cdf((x - 1 / 255 - mean) / std))
        dec = -torch.log((upper - lower).clamp_min(1e-12)).sum(dims)
    return ELBOResult(prior + diffusion + dec, prior, diffusion, dec, dim)
