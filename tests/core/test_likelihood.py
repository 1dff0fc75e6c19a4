"""Likelihoods against exact Gaussian / mixture log-densities and the closed-form DDPM bound."""

from __future__ import annotations

import math

import pytest
import torch

from sonodiff.core.denoiser import discrete_vp_denoiser
from sonodiff.core.likelihood import bits_per_dim, discrete_elbo, log_likelihood
from sonodiff.core.processes import (
    alphas_cumprod_to_sigmas,
    sigmas_to_alphas_cumprod,
    timestep_to_sigma,
    vp_alphas_cumprod,
)
from sonodiff.core.toy import GaussianMixture

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add contention
SMIN, SMAX = 1e-2, 100.0


def _gaussian() -> GaussianMixture:
    S = torch.tensor([[1.0, 0.6, 0.1], [0.6, 0.8, -0.2], [0.1, -0.2, 0.3]], dtype=F64)
    return GaussianMixture(torch.ones(1), torch.tensor([[0.3, -0.5, 0.2]], dtype=F64), S[None])


def _mixture() -> GaussianMixture:
    return GaussianMixture.random(3, 2, generator=torch.Generator().manual_seed(0), spread=1.5, scale_range=(0.2, 0.6))


# =========================================================================== probability-flow ODE
@pytest.mark.parametrize("which", ["gaussian", "mixture"])
def test_ode_log_likelihood_recovers_the_noised_log_density(which):
    """The ODE estimates log p_{sigma_min}(x) of the noised marginal: compare with gm.log_prob(x, sigma_min)."""
    gm = _gaussian() if which == "gaussian" else _mixture()
    x = gm.sample(6, generator=torch.Generator().manual_seed(1))
    mean, _ = gm.moments()
    res = log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, prior_mean=mean, atol=1e-5, rtol=1e-5)
    ref = gm.log_prob(x, SMIN)
    assert res.log_likelihood.shape == (6,) and res.nfe > 0 and res.dim == gm.dim
    assert ((res.log_likelihood - ref).abs() <= 0.01 * ref.abs().clamp_min(1.0)).all(), (res.log_likelihood, ref)
    assert (res.log_likelihood - ref).abs().max() < 2e-3  # in fact much closer than 1%
    assert torch.equal(res.stderr, torch.zeros(6, dtype=F64))
    torch.testing.assert_close(res.log_likelihood, res.prior_logp + res.delta_logp)
    if which == "gaussian":  # the data-mean prior matters at O(|mean| / sigma_max): without it, still < 1%
        res0 = log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, solver="rk4", num_steps=20)
        assert ((res0.log_likelihood - ref).abs() <= 0.01 * ref.abs().clamp_min(1.0)).all()


def test_ode_log_likelihood_fixed_step_rk4():
    gm = _mixture()
    x = gm.sample(4, generator=torch.Generator().manual_seed(2))
    res = log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, prior_mean=gm.moments()[0], solver="rk4", num_steps=40)
    assert res.nfe == 160
    torch.testing.assert_close(res.log_likelihood, gm.log_prob(x, SMIN), rtol=0, atol=5e-3)


def test_hutchinson_within_its_stated_error():
    # Hutchinson is for larger dims (in 3-D a Rademacher probe has only 4 distinct off-diagonal patterns, so
    # a handful of probes can agree by chance and understate the error): a 12-D Gaussian.
    gm = GaussianMixture.random(1, 12, generator=torch.Generator().manual_seed(7), scale_range=(0.2, 1.0))
    x = gm.sample(8, generator=torch.Generator().manual_seed(3))
    kw = {"sigma_min": SMIN, "sigma_max": SMAX, "prior_mean": gm.moments()[0], "solver": "rk4", "num_steps": 12}
    exact = log_likelihood(gm, x, **kw)
    for probe in ("rademacher", "gaussian"):
        hutch = log_likelihood(gm, x, method="hutchinson", num_probes=16, probe=probe, generator=torch.Generator().manual_seed(4), **kw)
        assert (hutch.stderr > 0).all()
        z = (hutch.log_likelihood - exact.log_likelihood) / hutch.stderr
        assert (z.abs() < 4.5).all(), (probe, z)
        assert 0.2 < z.pow(2).mean().sqrt() < 2.5, (probe, z)  # the stated error is neither far too small nor too large
        # same x path: the prior term is identical, only the divergence is estimated
        torch.testing.assert_close(hutch.prior_logp, exact.prior_logp)


def test_bits_per_dim():
    ll = torch.tensor([-3.0, 1.0], dtype=F64)
    torch.testing.assert_close(bits_per_dim(ll, 3), -ll / (3 * math.log(2)))
    # data scaled by 1/127.5: log p_orig = log p_model - dim log 127.5
    torch.testing.assert_close(bits_per_dim(ll, 3, data_scale=1 / 127.5), (-ll + 3 * math.log(127.5)) / (3 * math.log(2)))
    gm = _gaussian()
    x = gm.sample(2, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, solver="rk4", num_steps=10)
    torch.testing.assert_close(res.bits_per_dim(), -res.log_likelihood / (3 * math.log(2)))


def test_log_likelihood_bad_input():
    gm = _gaussian()
    x = gm.sample(2)
    with pytest.raises(ValueError, match="sigma_min"):
        log_likelihood(gm, x, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="valid"):
        log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, method="skilling")
    with pytest.raises(ValueError, match="num_probes"):
        log_likelihood(gm, x, sigma_min=SMIN, sigma_max=SMAX, method="hutchinson", num_probes=1)
    with pytest.raises(RuntimeError, match="non-finite"):
        log_likelihood(lambda x, s, c: x * float("nan"), x, sigma_min=SMIN, sigma_max=SMAX)


# =========================================================================== discrete ELBO
def _elbo_terms(gm: GaussianMixture, abar: torch.Tensor, variance: str):
    abp = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / abp
    bt = (1 - abp) / (1 - abar) * beta
    c0 = abp.sqrt() * beta / (1 - abar)
    vp = bt if variance == "small" else beta
    vd = bt[1] if variance == "small" else beta[0]
    return beta, bt, c0, vp, vd, (1 - abar) / abar


def _expected_elbo(gm: GaussianMixture, x0: torch.Tensor, abar: torch.Tensor, variance: str) -> torch.Tensor:
    """E_noise[bound | x0] ``[B]`` in closed form for one Gaussian S = U diag(l) U^T: with y = U^T (x0 - mu),
    x0 - x0_hat(x_t) = U (s^2/(l+s^2) y - s l/(l+s^2) eps), so E||x0 - x0_hat||^2 = sum y^2 (s^2/(l+s^2))^2 + s^2 (l/(l+s^2))^2."""
    D = gm.dim
    l, U, mu = gm.evals[0], gm.evecs[0], gm.means[0]
    y = (x0 - mu) @ U  # [B, D]
    _beta, bt, c0, vp, vd, s2 = _elbo_terms(gm, abar, variance)
    s2c = s2[:, None]  # [T, 1]
    mse = (y[None] ** 2 * (s2c / (l + s2c))[:, None] ** 2).sum(-1) + s2c * ((l / (l + s2c)) ** 2).sum(-1, keepdim=True)  # [T, B]
    aT = abar[-1]
    prior = 0.5 * (aT * x0**2 + (1 - aT) - 1 - torch.log(1 - aT)).sum(1)
    kl = 0.5 * (D * (torch.log(vp / bt) + bt / vp - 1)[1:, None] + (c0**2 / vp)[1:, None] * mse[1:])
    return prior + kl.sum(0) + 0.5 * (mse[0] / vd + D * torch.log(2 * math.pi * vd))


def _expected_elbo_over_data(gm: GaussianMixture, abar: torch.Tensor, variance: str) -> float:
    """E_data E_noise[bound]: E||x0 - x0_hat||^2 = tr Cov[x0 | x_t] = sum l s^2 / (l + s^2)."""
    D = gm.dim
    l, mu = gm.evals[0], gm.means[0]
    _beta, bt, c0, vp, vd, s2 = _elbo_terms(gm, abar, variance)
    post = (l * s2[:, None] / (l + s2[:, None])).sum(-1)  # [T]
    aT = abar[-1]
    prior = 0.5 * (aT * (mu**2 + torch.diagonal(gm.covs[0])) + (1 - aT) - 1 - torch.log(1 - aT)).sum()
    kl = 0.5 * (D * (torch.log(vp / bt) + bt / vp - 1)[1:] + (c0**2 / vp)[1:] * post[1:])
    return float(prior + kl.sum() + 0.5 * (post[0] / vd + D * torch.log(2 * math.pi * vd)))


def _fine_vp(T: int) -> torch.Tensor:
    """A VP schedule uniform in log-SNR from 14 down to -12 (fine everywhere, including near the data)."""
    lam = torch.linspace(14.0, -12.0, T, dtype=F64)
    return sigmas_to_alphas_cumprod(torch.exp(-lam / 2))


@pytest.mark.parametrize(
    "schedule,variance",
    [("ddpm", "small"), ("ddpm", "large"), ("fine", "large")],
)
def test_discrete_elbo_is_a_valid_bound_and_matches_its_closed_form(schedule, variance):
    gm = GaussianMixture(torch.ones(1), torch.tensor([[0.3, -0.5]], dtype=F64), torch.tensor([[[1.0, 0.6], [0.6, 0.8]]], dtype=F64))
    B = 400
    x0 = gm.sample(B, generator=torch.Generator().manual_seed(0))
    abar = vp_alphas_cumprod("linear", 1000) if schedule == "ddpm" else _fine_vp(1000)
    res = discrete_elbo(gm, x0, abar, variance=variance, generator=torch.Generator().manual_seed(1), timesteps_per_call=250)
    torch.testing.assert_close(res.nll_bound, res.prior + res.diffusion + res.decoder)
    expected = _expected_elbo(gm, x0, abar, variance)
    diff = res.nll_bound - expected
    se = diff.std() / math.sqrt(B)
    assert diff.mean().abs() < 4 * se + 1e-6, (diff.mean(), se)  # the Monte-Carlo estimator is unbiased
    assert abs(expected.mean().item() / _expected_elbo_over_data(gm, abar, variance) - 1) < 0.1  # helper consistency
    # validity: E_data[bound] >= E_data[-log p_data] = entropy (Gibbs' inequality), exactly in closed form
    H = 0.5 * (gm.dim * (1 + math.log(2 * math.pi)) + torch.logdet(gm.covs[0])).item()
    gap = _expected_elbo_over_data(gm, abar, variance) - H
    assert gap >= 0
    if variance == "large":
        assert gap < 0.005 * gm.dim  # nearly tight at T = 1000 (measured 0.0009 nats ddpm, 0.0018 fine)
    else:
        # fixed-small variances leave a gap of order 0.5 nat/dim (posterior-variance mismatch near t = 0)
        assert gap > 0.1 * gm.dim
    # bits per dim of the bound
    torch.testing.assert_close(res.bits_per_dim(), res.nll_bound / (gm.dim * math.log(2)))


@pytest.mark.parametrize("variance", ["small", "large"])
def test_discrete_elbo_is_exact_for_a_noise_independent_denoiser(variance):
    """With x0_hat = 0 whatever x_t, every term is deterministic: compare with Ho et al. eq. 5 written out."""
    gm = _gaussian()
    x0 = gm.sample(5, generator=torch.Generator().manual_seed(0))
    abar = vp_alphas_cumprod("cosine", 50)
    res = discrete_elbo(lambda x, s, c: torch.zeros_like(x), x0, abar, variance=variance)
    _beta, bt, c0, vp, vd, _ = _elbo_terms(gm, abar, variance)
    D, sq = gm.dim, (x0**2).sum(1)
    aT = abar[-1]
    prior = 0.5 * (aT * sq + D * ((1 - aT) - 1 - torch.log(1 - aT)))
    diffusion = sum(0.5 * (D * (torch.log(vp[i] / bt[i]) + bt[i] / vp[i] - 1) + c0[i] ** 2 * sq / vp[i]) for i in range(1, 50))
    decoder = 0.5 * (sq / vd + D * torch.log(2 * math.pi * vd))
    torch.testing.assert_close(res.prior, prior, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.diffusion, diffusion, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.decoder, decoder, rtol=1e-12, atol=1e-12)


def test_discrete_elbo_of_an_eps_model_through_the_discrete_vp_adapter():
    """An eps network on discrete timesteps (exact, from the Gaussian) wrapped by discrete_vp_denoiser gives the
    same bound as the exact denoiser itself (same noise draws)."""
    gm = _gaussian()
    abar = vp_alphas_cumprod("linear", 200, 1e-4 * 5, 2e-2 * 5)
    train_sigmas = alphas_cumprod_to_sigmas(abar)

    def eps_net(x_vp, t, cond):
        s = timestep_to_sigma(t.to(F64), train_sigmas)
        x = x_vp * torch.sqrt(1 + s[:, None] ** 2)
        return (x - gm(x, s)) / s[:, None]

    model = discrete_vp_denoiser(eps_net, abar, "eps")
    x0 = gm.sample(16, generator=torch.Generator().manual_seed(0))
    a = discrete_elbo(model, x0, abar, generator=torch.Generator().manual_seed(3), timesteps_per_call=50)
    b = discrete_elbo(gm, x0, abar, generator=torch.Generator().manual_seed(3), timesteps_per_call=50)
    torch.testing.assert_close(a.nll_bound, b.nll_bound, rtol=1e-6, atol=1e-6)


def test_discrete_elbo_discretized_decoder_by_hand():
    scipy_stats = pytest.importorskip("scipy.stats")
    c = 0.1  # a denoiser that always answers c: the decoder mean is known
    den = lambda x, s, cond: torch.full_like(x, c)
    x0 = torch.tensor([[-1.0, 1.0, 27 / 127.5 - 1, 200 / 127.5 - 1]], dtype=F64)
    abar = vp_alphas_cumprod("linear", 100, 0.1, 0.2)
    res = discrete_elbo(den, x0, abar, variance="large", decoder="discretized")
    std = math.sqrt(1 - abar[0].item())  # beta_1
    cdf = lambda v: scipy_stats.norm.cdf((v - c) / std)
    xs = x0[0].tolist()
    probs = [cdf(xs[0] + 1 / 255), 1 - cdf(xs[1] - 1 / 255)] + [cdf(v + 1 / 255) - cdf(v - 1 / 255) for v in xs[2:]]
    assert res.decoder.item() == pytest.approx(-sum(math.log(p) for p in probs), rel=1e-9)
    with pytest.raises(ValueError, match="8-bit"):
        discrete_elbo(den, x0 + 1e-3 * torch.tensor([[0, 0, 1, 0]], dtype=F64), abar, decoder="discretized")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        discrete_elbo(den, x0 * 2, abar, decoder="discretized")


def test_discrete_elbo_bad_input():
    gm = _gaussian()
    x0 = gm.sample(2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        discrete_elbo(gm, x0, vp_alphas_cumprod("linear", 10).flip(0))
    with pytest.raises(ValueError, match="valid"):
        discrete_elbo(gm, x0, vp_alphas_cumprod("linear", 10), variance="learned")
