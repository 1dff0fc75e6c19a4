"""Stochastic samplers reproduce a Gaussian mixture; per-sample seeds; Brownian-tree noise."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from sonodiff.core import SAMPLERS, sample
from sonodiff.core.noise import BrownianTree, BrownianTreeNoiseSampler, hash_normal, splitmix64
from sonodiff.core.schedules import karras_sigmas
from tests.core.conftest import make_mixture, separated_mixture

pytestmark = pytest.mark.usefixtures("single_thread")

N = 4000
STOCHASTIC = [
    ("ddpm", {}, 80),
    ("euler_ancestral", {}, 80),
    ("ddim", {"eta": 0.5}, 60),
    ("dpmpp_2m_sde", {}, 40),
    ("dpmpp_2m_sde", {"solver_type": "heun"}, 40),
    ("dpmpp_3m_sde", {}, 40),
    ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 10.0}, 40),
    ("langevin_pc", {"snr": 0.1}, 40),
    ("langevin_pc", {"predictor": "dpmpp_2m", "snr": 0.1, "n_corrector": 2}, 30),
]


def _assign(gm, y):
    logn, _, _ = gm._component_terms(y, torch.zeros(len(y), dtype=torch.float64))
    return (logn + gm.weights.log()).argmax(1)


@pytest.mark.parametrize("method,opts,steps", STOCHASTIC, ids=[f"{m}{o or ''}" for m, o, _ in STOCHASTIC])
def test_stochastic_sampler_reproduces_mixture(method, opts, steps):
    gm = separated_mixture()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64) * 40.0
    y = sample(gm, x, karras_sigmas(steps, 0.01, 40.0), method, generator=g, **opts)
    k = _assign(gm, y)
    for j in range(3):
        w = gm.weights[j].item()
        yj = y[k == j]
        assert abs(len(yj) / N - w) < 4 * math.sqrt(w * (1 - w) / N) + 0.01, f"{method}: weight of component {j}"
        std = gm.covs[j].diagonal().sqrt()
        assert ((yj.mean(0) - gm.means[j]).abs() < 5 * std / math.sqrt(len(yj)) + 0.03).all(), f"{method}: mean {j}"
        cov_err = (torch.cov(yj.T) - gm.covs[j]).abs().max() / gm.covs[j].abs().max()
        assert cov_err < 0.2, f"{method}: covariance {j} off by {cov_err:.3f} (relative)"


def test_s_noise_is_a_temperature():
    """s_noise scales the injected noise: at 0.5 the samples are visibly colder (smaller spread)."""
    gm = separated_mixture()
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 40.0
    grid = karras_sigmas(30, 0.01, 40.0)
    hot = sample(gm, x, grid, "dpmpp_2m_sde", generator=torch.Generator().manual_seed(1))
    cold = sample(gm, x, grid, "dpmpp_2m_sde", generator=torch.Generator().manual_seed(1), s_noise=0.5)
    k_hot, k_cold = _assign(gm, hot), _assign(gm, cold)
    spread = lambda y, k: sum(torch.cov(y[k == j].T).trace() for j in range(3))
    assert spread(cold, k_cold) < 0.8 * spread(hot, k_hot)


# =========================================================================== seeds
def _seeded(method, idx, grid, **opts):
    """Examples ``idx`` with their own generators (seed 100 + k) and start noise from the same generators."""
    gens = [torch.Generator().manual_seed(100 + k) for k in idx]
    x = torch.stack([torch.randn(2, generator=g, dtype=torch.float64) for g in gens]) * float(grid[0])
    return sample(make_mixture(), x, grid, method, generator=gens, **opts)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_per_sample_seeds_do_not_depend_on_batch(method):
    opts = {"s_churn": 5.0} if method == "heun" else {}
    grid = karras_sigmas(8, 0.02, 20.0)
    batch = _seeded(method, [0, 1, 2, 3, 4], grid, **opts)
    alone = _seeded(method, [3], grid, **opts)
    torch.testing.assert_close(batch[3:4], alone, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(batch[2], batch[3])


@pytest.mark.parametrize("method", ["ddpm", "dpmpp_2m_sde", "dpmpp_3m_sde", "langevin_pc"])
def test_bit_identical_reruns(method):
    grid = karras_sigmas(10, 0.02, 20.0)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    a = sample(make_mixture(), x, grid, method, generator=torch.Generator().manual_seed(5))
    b = sample(make_mixture(), x, grid, method, generator=torch.Generator().manual_seed(5))
    c = sample(make_mixture(), x, grid, method, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generator_list_must_match_batch():
    with pytest.raises(ValueError, match="list of 3"):
        sample(make_mixture(), torch.zeros(3, 2), karras_sigmas(4, 0.1, 1.0), "ddpm", generator=[torch.Generator()] * 2)


# =========================================================================== Brownian tree
def test_splitmix64_matches_reference():
    M = (1 << 64) - 1

    def ref(z):
        z = (z + 0x9E3779B97F4A7C15) & M
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    xs = [0, 1, 12345, (1 << 62) + 7, (1 << 63) - 1]
    got = splitmix64(torch.tensor(xs, dtype=torch.int64))
    assert [int(v) & M for v in got] == [ref(v) for v in xs]
    z = hash_normal(torch.arange(50, dtype=torch.int64), 2000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and abs((z**4).mean() - 3) < 0.06


def test_brownian_increments_are_consistent_across_grids():
    """Coarse increment = sum of fine increments, for two separately built samplers with the same seeds."""
    x = torch.zeros(3, 4, 5)
    fine = karras_sigmas(16, 0.01, 10.0)[:-1].tolist()
    coarse = fine[::3]
    a = BrownianTreeNoiseSampler(x, 0.01, 10.0, [torch.Generator().manual_seed(k) for k in range(3)])
    b = BrownianTreeNoiseSampler(x, 0.01, 10.0, [torch.Generator().manual_seed(k) for k in range(3)])
    for s0, s1 in pairwise(coarse):
        inc = a(s0, s1) * math.sqrt(s0 - s1)
        parts = [t for t in fine if s1 <= t <= s0]
        total = sum(b(u, v) * math.sqrt(u - v) for u, v in pairwise(parts))
        torch.testing.assert_close(inc, total, rtol=1e-9, atol=1e-12)
    # example 1 alone equals example 1 of the batch
    c = BrownianTreeNoiseSampler(x[:1], 0.01, 10.0, [torch.Generator().manual_seed(1)])
    torch.testing.assert_close(c(5.0, 2.0)[0], a(5.0, 2.0)[1])


def test_brownian_increments_are_independent_gaussians():
    tree = BrownianTree(torch.arange(64, dtype=torch.int64), (500,), 0.0, 4.0)
    ts = [0.0, 0.3, 1.0, 1.7, 4.0]
    incs = [(tree(b) - tree(a)) / math.sqrt(b - a) for a, b in pairwise(ts)]
    for z in incs:
        assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.03
    for u, v in pairwise(incs):
        assert abs((u * v).mean()) < 0.02  # disjoint increments uncorrelated
    # small increments (resolved deep in the tree, at arbitrary non-dyadic offsets) are N(0, dt) too
    for dt in (1e-3, 3.7e-6):
        z = torch.cat([(tree(t + dt) - tree(t)) / math.sqrt(dt) for t in (0.1234567, 1.98765, 3.3)])
        assert abs(z.var() - 1) < 0.05, (dt, z.var())


def test_sde_paths_agree_across_step_counts():
    """With the Brownian tree, N and 2N steps from one seed give nearby samples; other seeds do not."""
    gm = make_mixture()
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    run = lambda n, seed: sample(gm, x, karras_sigmas(n, 0.02, 20.0), "dpmpp_2m_sde", generator=torch.Generator().manual_seed(seed))
    d_same = (run(25, 1) - run(50, 1)).norm(dim=1).mean()
    d_other = (run(25, 1) - run(50, 2)).norm(dim=1).mean()
    assert d_same < 0.25 * d_other, (d_same, d_other)
