"""Parameterizations, Preconditioned (denoiser + loss), the discrete-VP adapter and Cond."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import Preconditioned, check_sigma, discrete_vp_denoiser
from sonodiff.core.param import (
    PARAMETERIZATIONS,
    WEIGHTINGS,
    Parameterization,
    get_parameterization,
    loss_weight,
)
from sonodiff.core.processes import alphas_cumprod_to_sigmas, timestep_to_sigma, vp_alphas_cumprod
from sonodiff.core.toy import GaussianMixture

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add contention


def _gm() -> GaussianMixture:
    return GaussianMixture.random(2, 3, generator=torch.Generator().manual_seed(0))


def _sigma_from_c_noise(name: str, c_noise: torch.Tensor) -> torch.Tensor:
    return c_noise / (1 - c_noise) if name == "flow" else torch.exp(4 * c_noise)


class IdealNet(nn.Module):
    """F*(c_in x, c_noise) = (D(x, sigma) - c_skip x) / c_out for the exact Gaussian-mixture denoiser D, built only
    from the parameterization's coefficients (float64 via a dummy parameter)."""

    def __init__(self, gm: GaussianMixture, param: Parameterization) -> None:
        super().__init__()
        self.gm, self.param = gm, param
        self.dummy = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x_in, c_noise, cond):
        sigma = _sigma_from_c_noise(self.param.name, c_noise.to(F64))
        c_skip, c_out, c_in, _ = self.param.coefficients(sigma)
        x = x_in / c_in[:, None]
        return (self.gm(x, sigma) - c_skip[:, None] * x) / c_out[:, None]


def _lambda(weighting: str, p: Parameterization, s: torch.Tensor, gamma: float) -> torch.Tensor:
    """lambda(sigma) on ||D - x0||^2 written out independently of sonodiff.core.param."""
    sd = p.sigma_data
    c_out = p.coefficients(s)[1]
    return {
        "native": 1 / c_out**2,
        "uniform": torch.ones_like(s),
        "edm": (s**2 + sd**2) / (s * sd) ** 2,
        "snr": 1 / s**2,
        "min_snr": torch.minimum(1 / s**2, torch.full_like(s, gamma)),
        "soft_min_snr": 1 / (s**2 + 1 / gamma),
    }[weighting]


def test_tables():
    assert set(PARAMETERIZATIONS) == {"edm", "eps", "x0", "v", "flow"}
    assert set(WEIGHTINGS) == {"native", "uniform", "edm", "snr", "min_snr", "soft_min_snr"}


# =========================================================================== equivalence
@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_ideal_network_gives_the_same_denoiser_under_every_parameterization(name):
    gm = _gm()
    model = Preconditioned(IdealNet(gm, get_parameterization(name)), name)
    g = torch.Generator().manual_seed(1)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=F64)
    x = gm.sample(6, generator=g) + sigma[:, None] * torch.randn(6, 3, generator=g, dtype=F64)
    torch.testing.assert_close(model(x, sigma), gm(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_target_coefficients(name):
    p = get_parameterization(name)
    s = torch.tensor([0.05, 0.7, 4.0], dtype=F64)
    g = torch.Generator().manual_seed(2)
    x0, n = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(3, 2, generator=g, dtype=F64)
    c_skip, c_out, _, _ = p.coefficients(s)
    a, b = p.target_coefficients(s)
    x = x0 + s[:, None] * n
    torch.testing.assert_close(a[:, None] * x0 + b[:, None] * n, (x0 - c_skip[:, None] * x) / c_out[:, None])


def test_foreign_conventions():
    """eps / v / flow networks in their own (diffusers, rectified-flow) conventions are exact denoisers."""
    gm = _gm()
    g = torch.Generator().manual_seed(3)
    sigma = torch.tensor([0.1, 1.0, 5.0], dtype=F64)
    x0 = gm.sample(3, generator=g)
    eps = torch.randn(3, 3, generator=g, dtype=F64)
    x = x0 + sigma[:, None] * eps
    abar = 1 / (1 + sigma**2)
    a, b = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    t = sigma / (1 + sigma)
    # nets that know the true x0 and eps of this batch, fed the process-space input they were trained on
    def check(name, net_target, expected_input):
        seen = []

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.p = nn.Parameter(torch.zeros((), dtype=F64))

            def forward(self, x_in, c_noise, cond):
                seen.append(x_in)
                return net_target

        out = Preconditioned(Net(), name)(x, sigma)
        torch.testing.assert_close(seen[0], expected_input)
        torch.testing.assert_close(out, x0)

    check("eps", eps, a * x0 + b * eps)  # x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps
    check("v", a * eps - b * x0, a * x0 + b * eps)  # v = alpha eps - sigma_vp x0 (Salimans & Ho 2022)
    check("flow", eps - x0, (1 - t)[:, None] * x0 + t[:, None] * eps)  # x_t = (1 - t) x0 + t eps, u = eps - x0
    check("x0", x0, x / (sigma**2 + 1).sqrt()[:, None])


# =========================================================================== loss
@pytest.mark.parametrize("name", PARAMETERIZATIONS)
@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_loss_equals_weighted_x0_error_for_a_random_net(name, weighting):
    """loss = lambda(sigma) mean((D - x0)^2) per example, whatever the parameterization (checked by hand)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))  # float32: the compute dtype
    model = Preconditioned(lambda x_in, c, cond: net(x_in) * (1 + c[:, None]), name, weighting=weighting, gamma=4.0)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(5, 3, generator=g, dtype=F64)
    noise = torch.randn(5, 3, generator=g, dtype=F64)
    sigma = torch.tensor([0.02, 0.3, 1.0, 2.5, 30.0], dtype=F64)
    loss = model.loss(x0, sigma, noise)
    assert loss.shape == (5,) and loss.dtype == torch.float32
    d = model(x0 + sigma[:, None] * noise, sigma)
    expected = _lambda(weighting, model.param, sigma, 4.0) * ((d.to(F64) - x0) ** 2).mean(1)
    torch.testing.assert_close(loss.to(F64), expected, rtol=2e-4, atol=0)  # the net runs in float32


def test_loss_of_the_ideal_network_is_the_posterior_variance():
    """E[(D* - x0)^2] = tr Cov[x0 | x_sigma] / dim: for a Gaussian, tr(S - S (S + s^2 I)^-1 S) / dim."""
    S = torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.8, 0.2], [0.0, 0.2, 0.3]], dtype=F64)
    gm = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0, 0.2]], dtype=F64), S[None])
    B = 20000
    g = torch.Generator().manual_seed(5)
    x0 = gm.sample(B, generator=g)
    for name, weighting, s in (("eps", "uniform", 0.7), ("v", "edm", 0.3), ("flow", "snr", 2.0)):
        model = Preconditioned(IdealNet(gm, get_parameterization(name)), name, weighting=weighting)
        sigma = torch.full((B,), s, dtype=F64)
        loss = model.loss(x0, sigma, generator=g).to(F64)
        post = torch.trace(S - S @ torch.linalg.solve(S + s**2 * torch.eye(3, dtype=F64), S)) / 3
        lam = _lambda(weighting, model.param, torch.tensor(s, dtype=F64), 5.0)
        assert abs(loss.mean() - lam * post) < 4 * loss.std() / math.sqrt(B), (name, loss.mean(), lam * post)


def test_loss_mask_and_default_sigma():
    torch.manual_seed(0)
    net = nn.Conv1d(2, 2, 3, padding=1)
    model = Preconditioned(lambda x, c, cond: net(x), "edm", weighting="uniform")
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(3, 2, 10, generator=g, dtype=F64)
    noise = torch.randn(3, 2, 10, generator=g, dtype=F64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    mask = torch.zeros(3, 1, 10)
    mask[0, :, :6] = 1
    mask[1] = 1
    loss = model.loss(x0, sigma, noise, mask=mask)
    full = ((model(x0 + sigma[:, None, None] * noise, sigma) - x0) ** 2).to(F64)
    torch.testing.assert_close(loss[0].to(F64), full[0, :, :6].mean(), rtol=1e-4, atol=0)
    torch.testing.assert_close(loss[1].to(F64), full[1].mean(), rtol=1e-4, atol=0)
    assert loss[2] == 0  # an all-padding example contributes nothing
    drawn = model.loss(x0, generator=torch.Generator().manual_seed(7))
    again = model.loss(x0, generator=torch.Generator().manual_seed(7))
    assert drawn.shape == (3,) and torch.isfinite(drawn).all() and torch.equal(drawn, again)


# =========================================================================== adapter
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_discrete_vp_adapter_is_exact_on_and_between_timesteps(prediction):
    gm = _gm()
    abar = vp_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)
    train = alphas_cumprod_to_sigmas(abar)

    def unet(x_vp, t, cond):  # a "diffusers" model: VP input, timestep, predicts eps / v / x0
        s = timestep_to_sigma(t.to(F64), train)
        a, b = (1 / (1 + s**2)).sqrt()[:, None], (s**2 / (1 + s**2)).sqrt()[:, None]
        x = x_vp / a
        x0 = gm(x, s)
        eps = (x - x0) / s[:, None]
        return {"eps": eps, "v": a * eps - b * x0, "x0": x0}[prediction]

    model = discrete_vp_denoiser(unet, abar, prediction)
    g = torch.Generator().manual_seed(8)
    sigma = torch.cat([train[[0, 10, 500, 999]], torch.tensor([0.3, 2.0], dtype=F64)])  # on and off the grid
    x = gm.sample(6, generator=g) + sigma[:, None] * torch.randn(6, 3, generator=g, dtype=F64)
    torch.testing.assert_close(model(x, sigma), gm(x, sigma), rtol=1e-5, atol=1e-5)  # plain callable: float32
    quant = discrete_vp_denoiser(unet, abar, prediction, quantize=True)
    torch.testing.assert_close(quant(x[:4], sigma[:4]), gm(x[:4], sigma[:4]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="valid"):
        discrete_vp_denoiser(unet, abar, "flow")


# =========================================================================== bad input
def test_parameterization_and_weighting_bad_input():
    with pytest.raises(ValueError, match=r"valid names: \['edm', 'eps', 'flow', 'v', 'x0'\]"):
        get_parameterization("epsilon")
    with pytest.raises(ValueError, match="valid names"):
        Parameterization("velocity")
    with pytest.raises(ValueError, match="sigma_data"):
        Parameterization("edm", sigma_data=0.0)
    with pytest.raises(ValueError, match="valid names"):
        loss_weight("p2", get_parameterization("eps"), torch.ones(2))
    with pytest.raises(ValueError, match="valid names"):
        Preconditioned(lambda x, c, cond: x, "eps", weighting="p2")
    with pytest.raises(ValueError, match="valid names"):
        Preconditioned(lambda x, c, cond: x, "eps", density="beta")
    assert get_parameterization("edm").sigma_data == 0.5 and get_parameterization("eps").sigma_data == 1.0


def test_sigma_shape_errors():
    x = torch.zeros(3, 2)
    model = Preconditioned(lambda x, c, cond: x, "edm")
    for bad in (torch.ones(3, 1), torch.ones(()), torch.ones(2), torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, float("nan"), 1.0])):
        with pytest.raises(ValueError, match="sigma"):
            model(x, bad)
    with pytest.raises(TypeError):
        check_sigma(x, 1.0)
    with pytest.raises(RuntimeError, match="shape"):
        Preconditioned(lambda x, c, cond: x[:, :1], "edm")(x, torch.ones(3))


# =========================================================================== Cond
def test_cond():
    g = torch.Generator().manual_seed(9)
    c = Cond(tokens=torch.randn(4, 5, 8, generator=g), mask=torch.ones(4, 5, dtype=torch.bool), pooled=torch.randn(4, 6, generator=g))
    assert c.batch_size == 4 and not c.is_empty() and Cond().is_empty()
    u = c.null_all()
    assert u.null.tolist() == [True] * 4 and torch.equal(u.tokens, c.tokens)
    both = Cond.cat([c, u])
    assert both.batch_size == 8 and both.null.tolist() == [False] * 4 + [True] * 4
    assert torch.equal(both.index(slice(4, 8)).pooled, c.pooled)
    assert torch.equal(c.repeat_interleave(2).pooled[2], c.pooled[1])
    dropped = Cond(pooled=torch.zeros(20000, 1)).drop(0.3, torch.Generator().manual_seed(0))
    assert abs(dropped.null.float().mean().item() - 0.3) < 0.015
    assert c.drop(0.0) is c
    with pytest.raises(ValueError, match="batch size"):
        Cond(tokens=torch.zeros(2, 3, 4), pooled=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="bool"):
        Cond(tokens=torch.zeros(2, 3, 4), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="token lengths"):
        Cond.cat([c, Cond(tokens=torch.zeros(1, 2, 8), mask=torch.ones(1, 2, dtype=torch.bool), pooled=torch.zeros(1, 6))])
    with pytest.raises(ValueError, match="present in some"):
        Cond.cat([c, Cond(tokens=torch.zeros(1, 5, 8), mask=torch.ones(1, 5, dtype=torch.bool))])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        c.drop(1.5)
