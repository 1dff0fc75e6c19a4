"""Closed-form diffusion targets: Gaussian mixtures with exact denoisers, densities and flows.

For data x0 ~ sum_k w_k N(mu_k, S_k), the VE-noised marginal at level sigma is the mixture
p_sigma = sum_k w_k N(mu_k, S_k + sigma^2 I), and the ideal denoiser is

    E[x0 | x] = sum_k r_k(x) (mu_k + S_k (S_k + sigma^2 I)^{-1} (x - mu_k)),   r_k = posterior weight of k.

For one component the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma has the exact solution
(in the eigenbasis S = U diag(l) U^T): U^T (x(s1) - mu) = sqrt((l + s1^2) / (l + s0^2)) U^T (x(s0) - mu).
These give samplers, parameterizations and likelihoods something exact to be checked against.
Everything is float64; data are flat vectors ``[B, D]`` (other shapes are flattened and restored).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sonodiff.core.cond import Cond

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A Gaussian mixture in D dimensions with exact diffusion quantities.

    Args:
        weights: ``[K]`` positive (normalised internally).
        means: ``[K, D]``.
        covs: ``[K, D, D]`` symmetric positive definite covariances.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        S = torch.as_tensor(covs, dtype=torch.float64)
        if w.ndim != 1 or mu.ndim != 2 or S.ndim != 3 or not (len(w) == len(mu) == len(S)) or S.shape[1:] != (mu.shape[1],) * 2:
            raise ValueError(f"need weights [K], means [K, D], covs [K, D, D]; got {tuple(w.shape)}, {tuple(mu.shape)}, {tuple(S.shape)}")
        if (w <= 0).any():
            raise ValueError("mixture weights must be > 0")
        self.weights = w / w.sum()
        self.means = mu
        self.covs = 0.5 * (S + S.transpose(1, 2))
        self.evals, self.evecs = torch.linalg.eigh(self.covs)  # [K, D], [K, D, D]
        if (self.evals <= 0).any():
            raise ValueError("covariances must be positive definite")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, num_components: int, dim: int, generator: torch.Generator | None = None, spread: float = 2.0,
               scale_range: tuple[float, float] = (0.05, 0.5)) -> "GaussianMixture":
        """A random well-separated-ish mixture with anisotropic covariances (deterministic for a generator)."""
        g = generator
        w = torch.rand(num_components, generator=g, dtype=torch.float64) + 0.5
        mu = torch.randn(num_components, dim, generator=g, dtype=torch.float64) * spread
        lo, hi = scale_range
        covs = []
        for _ in range(num_components):
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
            ev = (lo + (hi - lo) * torch.rand(dim, generator=g, dtype=torch.float64)) ** 2
            covs.append(q @ torch.diag(ev) @ q.T)
        return cls(w, mu, torch.stack(covs))

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` clean samples ``[n, D]``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        L = self.evecs * self.evals.sqrt().unsqueeze(1)  # [K, D, D]: S = L L^T
        return self.means[k] + torch.einsum("nij,nj->ni", L[k], z)

    # ------------------------------------------------------------------ exact quantities at noise level sigma
    def _flat(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim and x[0].numel() != self.dim:
            raise ValueError(f"x has {x[0].numel()} elements per example, the mixture has dim {self.dim}")
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def _component_terms(self, x: Tensor, sigma: Tensor):
        """Per component: log N(x; mu_k, S_k + s^2 I) [B, K] and coordinates y = U_k^T (x - mu_k) [B, K, D]."""
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1) ** 2  # [B, 1, 1]
        diff = x.unsqueeze(1) - self.means.unsqueeze(0)  # [B, K, D]
        y = torch.einsum("kdj,bkd->bkj", self.evecs, diff)  # U^T diff
        lam = self.evals.unsqueeze(0) + s2  # [B, K, D]
        logn = -0.5 * ((y**2 / lam).sum(-1) + torch.log(lam).sum(-1) + self.dim * math.log(2 * math.pi))
        return logn, y, lam

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) ``[B]`` of the VE-noised marginal (sigma ``[B]`` or a float; 0 = the data density)."""
        x = self._flat(x)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        logn, _, _ = self._component_terms(x, sigma)
        return torch.logsumexp(logn + self.weights.log(), dim=1)

    def denoise(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        """The ideal denoiser E[x0 | x_sigma = x] with the shape and dtype of ``x`` (``sigma`` ``[B]``)."""
        shape, dtype = x.shape, x.dtype
        xf = self._flat(x)
        logn, y, lam = self._component_terms(xf, sigma)
        r = torch.softmax(logn + self.weights.log(), dim=1)  # [B, K]
        # mu_k + S_k (S_k + s^2)^-1 (x - mu_k) = mu_k + U (l / (l + s^2)) U^T (x - mu_k)
        shrunk = y * (self.evals.unsqueeze(0) / lam)
        post = self.means.unsqueeze(0) + torch.einsum("kdj,bkj->bkd", self.evecs, shrunk)
        return (r.unsqueeze(-1) * post).sum(1).reshape(shape).to(dtype)

    __call__ = denoise

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """grad_x log p_sigma(x) = (D(x) - x) / sigma^2 (Tweedie)."""
        s2 = sigma.to(torch.float64).reshape((-1,) + (1,) * (x.ndim - 1)) ** 2
        return (self.denoise(x, sigma).to(torch.float64) - x.to(torch.float64)) / s2

    def ode_solution(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact probability-flow ODE map x(sigma_from) -> x(sigma_to); single-component mixtures only."""
        if len(self.weights) != 1:
            raise ValueError("the closed-form ODE solution exists for a single Gaussian; use a reference solve for mixtures")
        shape, dtype = x.shape, x.dtype
        xf = self._flat(x)
        U, l, mu = self.evecs[0], self.evals[0], self.means[0]
        y = (xf - mu) @ U
        y = y * torch.sqrt((l + sigma_to**2) / (l + sigma_from**2))
        return (mu + y @ U.T).reshape(shape).to(dtype)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean ``[D]`` and covariance ``[D, D]`` of the mixture."""
        m = (self.weights.unsqueeze(1) * self.means).sum(0)
        d = self.means - m
        c = (self.weights.reshape(-1, 1, 1) * (self.covs + d.unsqueeze(2) * d.unsqueeze(1))).sum(0)
        return m, c
