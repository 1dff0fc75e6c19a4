"""Shared fixtures for the core tests: Gaussian targets with exact denoisers, reference ODE solves.

Other core test files (guidance, editing, likelihood) may use these; only the samplers helper edits this file.
"""

from __future__ import annotations

import math

import pytest
import torch

from sonodiff.core.toy import GaussianMixture


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (small tensors: threads only add contention on a shared CI box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_gaussian(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """One anisotropic Gaussian (exact probability-flow solution: ``gm.ode_solution``)."""
    return GaussianMixture.random(1, dim, torch.Generator().manual_seed(seed), spread=1.0, scale_range=(0.2, 1.0))


def make_mixture(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """A 3-component mixture in ``dim`` dimensions with unequal weights and anisotropic covariances."""
    return GaussianMixture.random(3, dim, torch.Generator().manual_seed(seed), spread=2.0, scale_range=(0.15, 0.6))


def separated_mixture() -> GaussianMixture:
    """Three well-separated 2-D components (unambiguous assignment of samples for moment checks)."""
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    mu = torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]], dtype=torch.float64)
    covs = torch.stack([
        torch.tensor([[0.30, 0.10], [0.10, 0.20]]),
        torch.tensor([[0.15, -0.05], [-0.05, 0.40]]),
        torch.tensor([[0.25, 0.0], [0.0, 0.10]]),
    ]).to(torch.float64)
    return GaussianMixture(w, mu, covs)


@pytest.fixture
def gaussian() -> GaussianMixture:
    return make_gaussian()


@pytest.fixture
def mixture() -> GaussianMixture:
    return make_mixture()


@pytest.fixture
def separated() -> GaussianMixture:
    return separated_mixture()


def rk4_reference(gm: GaussianMixture, x: torch.Tensor, sigma_from: float, sigma_to: float, steps: int = 400) -> torch.Tensor:
    """Probability-flow ODE solved with classical RK4 in t = log(sigma): dx/dt = x - D(x, e^t).

    Independent of the samplers under test; with smooth right-hand side in t, 400 steps reach ~1e-12.
    """
    x = x.to(torch.float64)
    B = x.shape[0]
    f = lambda x, t: x - gm.denoise(x, torch.full((B,), math.exp(t), dtype=torch.float64))
    t0, t1 = math.log(sigma_from), math.log(sigma_to)
    h = (t1 - t0) / steps
    t = t0
    for _ in range(steps):
        k1 = f(x, t)
        k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = f(x + h * k3, t + h)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return x


@pytest.fixture
def rk4():
    return rk4_reference
