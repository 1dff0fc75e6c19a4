"""Classifier-free and gradient guidance against exact Gaussian-mixture denoisers and closed forms."""

from __future__ import annotations

import pytest
import torch

from sonodiff.core.cond import Cond
from sonodiff.core.guidance import ClassifierFreeGuidance, GradientGuidance
from sonodiff.core.samplers import sample
from sonodiff.core.schedules import karras_sigmas
from sonodiff.core.toy import GaussianMixture

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add contention


class Switch:
    """Exact denoiser whose data distribution is chosen by the Cond: rows with ``null`` use ``uncond``, the
    others ``gms[int(pooled[:, 0])]``. Records every call's batch size."""

    def __init__(self, gms: list[GaussianMixture], uncond: GaussianMixture) -> None:
        self.gms, self.uncond, self.calls = gms, uncond, []

    def __call__(self, x, sigma, cond):
        self.calls.append(x.shape[0])
        out = self.uncond(x, sigma)
        which = cond.pooled[:, 0].long()
        null = cond.null_mask(x.shape[0])
        for k, gm in enumerate(self.gms):
            rows = (which == k) & ~null
            out = torch.where(rows.reshape(-1, 1), gm(x, sigma), out)
        return out


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    cond_gm = GaussianMixture.random(2, 3, generator=g)
    neg_gm = GaussianMixture.random(2, 3, generator=g)
    unc_gm = GaussianMixture.random(3, 3, generator=g)
    den = Switch([cond_gm, neg_gm], unc_gm)
    B = 6
    x = torch.randn(B, 3, generator=g, dtype=F64) * 2
    sigma = torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 20.0], dtype=F64)
    cond = Cond(pooled=torch.zeros(B, 1, dtype=F64))
    return den, cond_gm, neg_gm, unc_gm, x, sigma, cond


def test_scale_one_is_conditional_and_zero_is_unconditional_exactly(setup):
    den, cond_gm, _, unc_gm, x, sigma, cond = setup
    assert torch.equal(ClassifierFreeGuidance(den, 1.0)(x, sigma, cond), cond_gm(x, sigma))
    assert torch.equal(ClassifierFreeGuidance(den, 0.0)(x, sigma, cond), unc_gm(x, sigma))
    assert torch.equal(ClassifierFreeGuidance(den, 1.0, batched=False)(x, sigma, cond), cond_gm(x, sigma))


def test_guided_formula_and_batched_equals_unbatched(setup):
    den, cond_gm, _, unc_gm, x, sigma, cond = setup
    w = 3.5
    expected = unc_gm(x, sigma) + w * (cond_gm(x, sigma) - unc_gm(x, sigma))
    den.calls.clear()
    batched = ClassifierFreeGuidance(den, w)(x, sigma, cond)
    assert den.calls == [2 * x.shape[0]]  # both branches in ONE call
    den.calls.clear()
    unbatched = ClassifierFreeGuidance(den, w, batched=False)(x, sigma, cond)
    assert den.calls == [x.shape[0], x.shape[0]]
    torch.testing.assert_close(batched, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched, unbatched, rtol=1e-12, atol=1e-12)
    # per-example scales
    ws = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
    per = ClassifierFreeGuidance(den, ws)(x, sigma, cond)
    exp = unc_gm(x, sigma) + ws[:, None] * (cond_gm(x, sigma) - unc_gm(x, sigma))
    torch.testing.assert_close(per, exp, rtol=1e-12, atol=1e-12)


def test_negative_conditioning_replaces_unconditional_branch(setup):
    den, cond_gm, neg_gm, _unc_gm, x, sigma, cond = setup
    negative = Cond(pooled=torch.ones(x.shape[0], 1, dtype=F64))
    w = 2.0
    out = ClassifierFreeGuidance(den, w, negative=negative)(x, sigma, cond)
    torch.testing.assert_close(out, neg_gm(x, sigma) + w * (cond_gm(x, sigma) - neg_gm(x, sigma)), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, ClassifierFreeGuidance(den, w)(x, sigma, cond))
    # an explicit uncond is used as given (here: the negative Cond under another name)
    torch.testing.assert_close(ClassifierFreeGuidance(den, w, uncond=negative)(x, sigma, cond), out)


def test_rescale(setup):
    den, cond_gm, _, _unc_gm, x, sigma, cond = setup
    w, phi = 5.0, 0.7
    plain = ClassifierFreeGuidance(den, w)(x, sigma, cond)
    assert torch.equal(ClassifierFreeGuidance(den, w, rescale=0.0)(x, sigma, cond), plain)
    out = ClassifierFreeGuidance(den, w, rescale=phi)(x, sigma, cond)
    pos = cond_gm(x, sigma)
    # Lin et al. 2024 eq. 15-16 by hand, per example (population or sample std: the ratio is the same)
    for i in range(x.shape[0]):
        ratio = pos[i].std() / plain[i].std()
        torch.testing.assert_close(out[i], phi * plain[i] * ratio + (1 - phi) * plain[i], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, plain)
    # phi = 1: every example has exactly the conditional standard deviation
    full = ClassifierFreeGuidance(den, w, rescale=1.0)(x, sigma, cond)
    torch.testing.assert_close(full.std(dim=1), pos.std(dim=1), rtol=1e-12, atol=1e-12)


def test_sigma_interval(setup):
    den, cond_gm, _, _unc_gm, x, sigma, cond = setup
    w = 3.0
    lo, hi = 0.3, 5.0  # guided where 0.3 < sigma <= 5: rows 2, 3, 4
    out = ClassifierFreeGuidance(den, w, sigma_interval=(lo, hi))(x, sigma, cond)
    guided = ClassifierFreeGuidance(den, w)(x, sigma, cond)
    inside = torch.tensor([False, False, True, True, True, False])
    assert torch.equal(out[~inside], cond_gm(x, sigma)[~inside])
    torch.testing.assert_close(out[inside], guided[inside], rtol=1e-12, atol=1e-12)
    # entirely outside: the conditional estimate, with no unconditional evaluation
    den.calls.clear()
    out = ClassifierFreeGuidance(den, w, sigma_interval=(100.0, 200.0))(x, sigma, cond)
    assert torch.equal(out, cond_gm(x, sigma)) and den.calls == [x.shape[0]]


def test_cfg_inside_a_sampler_scale_one_equals_conditional_sampling(setup):
    den, cond_gm, _, _, _, _, cond = setup
    g = torch.Generator().manual_seed(3)
    sigmas = karras_sigmas(8, 0.01, 20.0)
    x = torch.randn(6, 3, generator=g, dtype=F64) * 20.0
    a = sample(ClassifierFreeGuidance(den, 1.0), x, sigmas, "euler", cond=cond)
    b = sample(cond_gm, x, sigmas, "euler")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_cfg_bad_input(setup):
    den, _, _, _, x, sigma, cond = setup
    with pytest.raises(ValueError, match="cond"):
        ClassifierFreeGuidance(den, 2.0)(x, sigma, None)
    with pytest.raises(ValueError, match="not both"):
        ClassifierFreeGuidance(den, 2.0, uncond=cond, negative=cond)
    with pytest.raises(ValueError, match="rescale"):
        ClassifierFreeGuidance(den, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="sigma_interval"):
        ClassifierFreeGuidance(den, 2.0, sigma_interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="batch size"):
        ClassifierFreeGuidance(den, 2.0, negative=cond.index(slice(0, 2)))(x, sigma, cond)
    with pytest.raises(ValueError, match="sigma"):
        ClassifierFreeGuidance(den, 2.0)(x, sigma[:2], cond)


# =========================================================================== gradient guidance
def _gaussian(dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=F64) * 0.5
    S = A @ A.T + 0.2 * torch.eye(dim, dtype=F64)
    m = torch.randn(dim, generator=g, dtype=F64)
    return GaussianMixture(torch.ones(1), m[None], S[None]), m, S, g


def _log_normal(r: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(r; 0, cov) for rows r [B, k]."""
    L = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(L, r.T, upper=False)
    return -0.5 * (z**2).sum(0) - torch.log(torch.diagonal(L)).sum() - 0.5 * r.shape[1] * torch.log(torch.tensor(2 * torch.pi, dtype=F64))


def test_gradient_guidance_is_exact_bayes_for_gaussians():
    """x0 ~ N(m, S), y = H x0 + noise(R). With score = log p(y | x_sigma) written through x0_hat, guidance at
    scale 1 gives exactly E[x0 | x_sigma, y] = (S^-1 + I/s^2 + H^T R^-1 H)^-1 (S^-1 m + x/s^2 + H^T R^-1 y)."""
    dim, k = 4, 2
    gm, m, S, g = _gaussian(dim, 1)
    H = torch.randn(k, dim, generator=g, dtype=F64)
    R = torch.diag(torch.tensor([0.3, 0.5], dtype=F64))
    y = torch.tensor([0.7, -1.2], dtype=F64)
    I = torch.eye(dim, dtype=F64)

    def score(x0_hat, sigma, cond):
        s2 = float(sigma[0]) ** 2
        post_cov = torch.linalg.inv(torch.linalg.inv(S) + I / s2)  # Cov[x0 | x_sigma]: constant for a Gaussian
        return _log_normal(y - x0_hat @ H.T, R + H @ post_cov @ H.T)

    guided = GradientGuidance(gm, score, 1.0)
    Si, Ri = torch.linalg.inv(S), torch.linalg.inv(R)
    for s in (0.1, 1.0, 7.0):
        x = torch.randn(5, dim, generator=g, dtype=F64) * (1 + s)
        sigma = torch.full((5,), s, dtype=F64)
        P = Si + I / s**2 + H.T @ Ri @ H
        expected = torch.linalg.solve(P, (Si @ m + H.T @ Ri @ y)[:, None] + x.T / s**2).T
        got = guided(x, sigma)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
        assert (got - gm(x, sigma)).abs().max() > 1e-3  # guidance did move the estimate


def test_gradient_guidance_formula_and_scale():
    """D' = D + scale sigma^2 J^T grad score, with J = S (S + s^2 I)^-1 for a Gaussian (checked by hand)."""
    dim = 3
    gm, _m, S, g = _gaussian(dim, 2)
    target = torch.tensor([1.0, -1.0, 0.5], dtype=F64)

    def score(x0_hat, sigma, cond):
        return -0.5 * ((x0_hat - target) ** 2).sum(1)

    x = torch.randn(4, dim, generator=g, dtype=F64)
    sigma = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=F64)
    scale = torch.tensor([0.0, 1.0, 2.0, 0.5], dtype=F64)
    got = GradientGuidance(gm, score, scale)(x, sigma)
    d = gm(x, sigma)
    for i in range(4):
        s2 = sigma[i] ** 2
        J = S @ torch.linalg.inv(S + s2 * torch.eye(dim, dtype=F64))
        torch.testing.assert_close(got[i], d[i] + scale[i] * s2 * J.T @ (target - d[i]), rtol=1e-10, atol=1e-12)
    # works under no_grad too (samplers run without autograd)
    with torch.no_grad():
        torch.testing.assert_close(GradientGuidance(gm, score, scale)(x, sigma), got)
    with pytest.raises(ValueError, match="one score per example"):
        GradientGuidance(gm, lambda x0, s, c: x0.sum(), 1.0)(x, sigma)


# ----------------------------------------------------------------------------------------------- autoguidance
def _gauss_denoiser(mu: float, var: float):
    """Exact denoiser of N(mu, var) in every dimension: D(x, sigma) = mu + var / (var + sigma^2) (x - mu)."""
    def D(x, sigma, cond=None):
        s2 = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return mu + var / (var + s2) * (x - mu)
    return D


def test_autoguidance_is_the_score_combination_of_the_two_models():
    """D_g + w (D - D_g) is x + sigma^2 (w score_main + (1 - w) score_guide): the guided density p_main^w
    p_guide^(1-w) at each noise level (Karras et al. 2024, eq. 2), here for two exact Gaussian denoisers."""
    from sonodiff.core.guidance import AutoGuidance

    main, guide = _gauss_denoiser(0.5, 0.3), _gauss_denoiser(0.5, 0.9)  # the guide is the blurrier model
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 10.0], dtype=F64)
    for w in (0.0, 1.0, 2.5):
        out = AutoGuidance(main, guide, w)(x, sigma, None)
        s2 = sigma.reshape(-1, 1) ** 2
        score = w * -(x - 0.5) / (0.3 + s2) + (1 - w) * -(x - 0.5) / (0.9 + s2)
        torch.testing.assert_close(out, x + s2 * score, rtol=1e-12, atol=1e-12)
    assert torch.equal(AutoGuidance(main, guide, 1.0)(x, sigma, None), main(x, sigma))


def test_autoguidance_interval_and_conditioning_reach_both_models():
    from sonodiff.core.guidance import AutoGuidance

    seen = []

    def main(x, sigma, cond):
        seen.append(("main", cond))
        return x * 0.5 + cond.pooled[:, :1]

    def guide(x, sigma, cond):
        seen.append(("guide", cond))
        return x * 0.25

    cond = Cond(pooled=torch.ones(4, 2, dtype=F64))
    x = torch.ones(4, 2, dtype=F64)
    sigma = torch.tensor([0.1, 1.0, 2.0, 20.0], dtype=F64)
    ag = AutoGuidance(main, guide, 2.0, sigma_interval=(0.5, 5.0))
    out = ag(x, sigma, cond)
    assert all(c is cond for _, c in seen)  # the guide gets the same (conditional) Cond, no null branch
    inside = torch.tensor([False, True, True, False])
    want = torch.where(inside[:, None], 0.25 + 2.0 * (1.5 - 0.25), torch.full_like(x, 1.5))
    torch.testing.assert_close(out, want)
    seen.clear()
    ag(x, torch.full((4,), 50.0, dtype=F64), cond)
    assert [k for k, _ in seen] == ["main"]  # no row inside the interval: the guide is not evaluated
    with pytest.raises(ValueError, match="sigma_interval"):
        AutoGuidance(main, guide, 2.0, sigma_interval=(3.0, 1.0))
    with pytest.raises(ValueError, match="rescale"):
        AutoGuidance(main, guide, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="batch size"):
        ag(x, sigma, Cond(pooled=torch.ones(3, 2, dtype=F64)))
