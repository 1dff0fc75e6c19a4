"""Editing: SDEdit starts, masks, replacement inpainting and RePaint against a Gaussian with known correlations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sonodiff.core.editing import (
    InpaintDenoiser,
    continuation_inputs,
    inpaint,
    prefix_mask,
    repaint,
    repaint_schedule,
    sdedit,
    sdedit_start,
    span_mask,
)
from sonodiff.core.schedules import karras_sigmas
from sonodiff.core.toy import GaussianMixture

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add contention


def _correlated_gaussian():
    A = torch.tensor([[1.0, 0.8, 0.5, 0.2], [0, 0.6, 0.5, 0.3], [0, 0, 0.5, 0.4], [0, 0, 0, 0.4]], dtype=F64)
    S = A.T @ A
    mu = torch.tensor([0.5, -0.3, 0.2, 0.1], dtype=F64)
    return GaussianMixture(torch.ones(1), mu[None], S[None]), mu, S


# =========================================================================== SDEdit
def test_sdedit_strength_zero_and_sigma_zero_return_input():
    gm, _, _ = _correlated_gaussian()
    sigmas = karras_sigmas(10, 0.01, 40.0)
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    for kw in ({"strength": 0.0}, {"sigma_start": 0.0}):
        x, grid = sdedit_start(x0, sigmas, generator=torch.Generator().manual_seed(1), **kw)
        assert torch.equal(x, x0) and grid.tolist() == [0.0]
        assert torch.equal(sdedit(gm, x0, sigmas, "euler", **kw), x0)


def test_sdedit_start_noise_level_and_grid():
    sigmas = karras_sigmas(10, 0.01, 40.0)
    x0 = torch.zeros(4000, 2, dtype=F64)
    x, grid = sdedit_start(x0, sigmas, strength=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grid, sigmas[7:])  # last floor(10 * 0.3) = 3 steps
    assert abs(x.std().item() / sigmas[7].item() - 1) < 0.03
    x, grid = sdedit_start(x0, sigmas, strength=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grid, sigmas)
    x, grid = sdedit_start(x0, sigmas, sigma_start=2.5, generator=torch.Generator().manual_seed(0))
    assert grid[0] == 2.5 and torch.equal(grid[1:], sigmas[sigmas < 2.5]) and (grid[1:] < grid[:-1]).all()
    assert abs(x.std().item() / 2.5 - 1) < 0.03
    # per-example generators: example k is the same whatever the batch
    gens = lambda n: [torch.Generator().manual_seed(100 + k) for k in range(n)]
    a, _ = sdedit_start(torch.zeros(3, 5, dtype=F64), sigmas, strength=0.5, generator=gens(3))
    b, _ = sdedit_start(torch.zeros(2, 5, dtype=F64), sigmas, strength=0.5, generator=gens(2))
    assert torch.equal(a[:2], b)
    for kw in ({}, {"strength": 0.5, "sigma_start": 1.0}, {"strength": 1.5}, {"sigma_start": 100.0}):
        with pytest.raises(ValueError):
            sdedit_start(x0, sigmas, **kw)


def test_sdedit_follows_the_exact_flow():
    gm, _, _ = _correlated_gaussian()
    x0 = gm.sample(1, generator=torch.Generator().manual_seed(0)).expand(500, 4).clone()
    # deterministic SDEdit = the probability-flow ODE from x0 + sigma_start n down to 0 (closed form for a Gaussian)
    fine = karras_sigmas(200, 1e-3, 40.0)
    near = sdedit(gm, x0[:20], fine, "euler", sigma_start=0.5, generator=torch.Generator().manual_seed(1))
    start, _ = sdedit_start(x0[:20], fine, sigma_start=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(near, gm.ode_solution(start, 0.5, 0.0), rtol=0, atol=1e-2)
    # strength: starts at grid[0] of the truncated grid, same exact flow
    mid = sdedit(gm, x0[:20], fine, "euler", strength=0.5, generator=torch.Generator().manual_seed(2))
    start, grid = sdedit_start(x0[:20], fine, strength=0.5, generator=torch.Generator().manual_seed(2))
    assert len(grid) == 101
    torch.testing.assert_close(mid, gm.ode_solution(start, float(grid[0]), 0.0), rtol=0, atol=3e-2)


# =========================================================================== masks
def test_masks():
    m = span_mask((2, 1, 10), 3, 7)
    assert m.dtype == torch.bool and m.shape == (2, 1, 10)
    assert m[0, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 3
    m = prefix_mask((1, 2, 4, 6), 2)
    assert m.shape == (1, 2, 4, 6) and m[..., :2].all() and not m[..., 2:].any()
    prefix = torch.arange(6, dtype=F64).reshape(1, 2, 3)
    xk, mk = continuation_inputs(prefix, 5)
    assert xk.shape == (1, 2, 5) and torch.equal(xk[..., :3], prefix) and (xk[..., 3:] == 0).all()
    assert torch.equal(mk, prefix_mask((1, 2, 5), 3))
    with pytest.raises(ValueError):
        span_mask((2, 10), 5, 11)
    with pytest.raises(ValueError):
        continuation_inputs(prefix, 2)


# =========================================================================== replacement
def test_inpaint_denoiser_replaces_known_region():
    gm, _, _ = _correlated_gaussian()
    g = torch.Generator().manual_seed(0)
    xk = torch.randn(5, 4, generator=g, dtype=F64)
    mask = torch.tensor([[1, 0, 1, 0]], dtype=F64).expand(5, 4)
    x = torch.randn(5, 4, generator=g, dtype=F64) * 3
    sigma = torch.full((5,), 0.7, dtype=F64)
    d = InpaintDenoiser(gm, xk, mask, replace="x0")(x, sigma)
    assert torch.equal(d[:, [0, 2]], xk[:, [0, 2]])
    torch.testing.assert_close(d[:, [1, 3]], gm(x, sigma)[:, [1, 3]])
    # "state": the denoiser sees the known data noised to sigma in the known region, x elsewhere
    seen = []
    InpaintDenoiser(lambda x, s, c: seen.append(x) or x, xk, mask, replace="state", generator=torch.Generator().manual_seed(4))(x, sigma)
    n = torch.randn(5, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(seen[0][:, [0, 2]], (xk + 0.7 * n)[:, [0, 2]])
    assert torch.equal(seen[0][:, [1, 3]], x[:, [1, 3]])
    with pytest.raises(ValueError, match="0 and 1"):
        InpaintDenoiser(gm, xk, mask * 0.5)
    with pytest.raises(ValueError, match="broadcast"):
        InpaintDenoiser(gm, xk[:, :1], mask)
    with pytest.raises(ValueError, match="replace"):
        InpaintDenoiser(gm, xk, mask, replace="both_ways")


@pytest.mark.parametrize("replace", ["x0", "state", "both"])
def test_inpaint_keeps_known_region_exactly(replace):
    gm, _, _ = _correlated_gaussian()
    g = torch.Generator().manual_seed(0)
    xk = torch.randn(4, 1, 4, generator=g, dtype=F64)
    mask = prefix_mask(xk.shape, 2)
    sigmas = karras_sigmas(10, 0.01, 40.0)
    x = 40.0 * torch.randn(4, 1, 4, generator=g, dtype=F64)
    out = inpaint(gm, xk, mask, x, sigmas, "euler", replace=replace, generator=g)
    assert torch.equal(out[..., :2], xk[..., :2])
    assert torch.isfinite(out).all() and not torch.equal(out[..., 2:], xk[..., 2:])


# =========================================================================== RePaint
def test_repaint_schedule():
    assert repaint_schedule(4, 1, 1) == [0, 1, 2, 3, 4]
    # jump 1, r = 2 (Alg. 1 with U = 2): every step is undone once except the last
    assert repaint_schedule(3, 2, 1) == [0, 1, 0, 1, 2, 1, 2, 3]
    path = repaint_schedule(20, 3, 5)
    steps = list(itertools.pairwise(path))
    assert path[0] == 0 and path[-1] == 20 and all(abs(b - a) in (1, 5) for a, b in steps)
    forward = [a for a, b in steps if b == a + 1]
    for i in range(20):  # every segment is denoised r times, except the last jump-block's
        assert forward.count(i) == (3 if i < 15 else 1)


def test_repaint_keeps_known_region_and_hits_the_conditional_mean():
    """For a Gaussian, the unknown coords given the known ones have mean mu_u + S_uk S_kk^-1 (x_k - mu_k).
    Plain replacement (resample=1) is biased (Lugmayr et al. 2022, Sec. 4.1); resampling removes most of it."""
    gm, mu, S = _correlated_gaussian()
    B = 1000
    xk = torch.tensor([1.5, 0.7, 0.0, 0.0], dtype=F64).expand(B, 4).clone()
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool).expand(B, 4)
    k, u = [0, 1], [2, 3]
    cond_mean = mu[u] + S[u][:, k] @ torch.linalg.solve(S[k][:, k], xk[0, k] - mu[k])
    cond_std = (S[u][:, u] - S[u][:, k] @ torch.linalg.solve(S[k][:, k], S[k][:, u])).diag().sqrt()
    sigmas = karras_sigmas(20, 0.01, 40.0)
    plain = repaint(gm, xk, mask, sigmas, resample=1, jump=1, generator=torch.Generator().manual_seed(1))
    rp = repaint(gm, xk, mask, sigmas, resample=6, jump=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rp[:, k], xk[:, k]) and torch.equal(plain[:, k], xk[:, k])
    err_plain = (plain[:, u].mean(0) - cond_mean).abs()
    err_rp = (rp[:, u].mean(0) - cond_mean).abs()
    se = cond_std / math.sqrt(B)
    assert (err_plain > 6 * se).all()  # the replacement bias is real at this B
    assert (err_rp < 0.5 * err_plain).all()
    assert (err_rp < 0.15 * cond_std).all(), (err_rp, cond_std)  # measured ~0.09 (seeds 1-3)
    assert ((rp[:, u].std(0) / cond_std - 1).abs() < 0.25).all()  # measured 0.82-0.86
    # RePaint with a sampler from the catalogue as its one-step method
    eu = repaint(gm, xk[:8], mask[:8], sigmas, resample=2, jump=2, method="euler", generator=torch.Generator().manual_seed(2))
    assert torch.equal(eu[:, k], xk[:8, k]) and torch.isfinite(eu).all()


def test_repaint_with_nothing_known_is_ancestral_sampling_of_the_data():
    """mask = 0, resample = 1: RePaint reduces to DDPM ancestral sampling, which on a fine grid samples the data."""
    gm, mu, S = _correlated_gaussian()
    B = 1500
    out = repaint(gm, torch.zeros(B, 4, dtype=F64), torch.zeros(B, 4, dtype=torch.bool), karras_sigmas(200, 0.01, 40.0),
                  resample=1, jump=1, generator=torch.Generator().manual_seed(0))
    C = torch.cov(out.T)
    assert ((C.diag() / S.diag() - 1).abs() < 0.1).all(), C.diag() / S.diag()
    assert ((out.mean(0) - mu).abs() < 4 * (S.diag() / B).sqrt()).all()
    torch.testing.assert_close(C, S, rtol=0, atol=0.12)


def test_repaint_bad_input():
    gm, _, _ = _correlated_gaussian()
    xk = torch.zeros(2, 4, dtype=F64)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="end at 0"):
        repaint(gm, xk, mask, karras_sigmas(5, 0.01, 10.0)[:-1])
    with pytest.raises(ValueError, match="dims"):
        repaint(gm, xk, mask[0], karras_sigmas(5, 0.01, 10.0))
    with pytest.raises(ValueError, match="strictly decreasing"):
        repaint(gm, xk, mask, torch.tensor([1.0, 2.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match=">= 1"):
        repaint(gm, xk, mask, karras_sigmas(5, 0.01, 10.0), resample=0)
