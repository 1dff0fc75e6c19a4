"""Sampling grids, training noise densities and process conversions (sonodiff.core.schedules / processes)."""

from __future__ import annotations

import math

import pytest
import torch

from sonodiff.core.processes import (
    BETA_SCHEDULES,
    PROCESSES,
    alphas_cumprod_to_sigmas,
    flow_scale,
    flow_t_to_sigma,
    get_process,
    logsnr,
    sigma_from_logsnr,
    sigma_to_flow_t,
    sigma_to_timestep,
    sigmas_to_alphas_cumprod,
    timestep_to_sigma,
    vp_alphas_cumprod,
    vp_betas,
    vp_scale,
)
from sonodiff.core.schedules import (
    DENSITIES,
    SCHEDULES,
    check_sigmas,
    flow_sigmas,
    get_sigmas,
    karras_sigmas,
    length_shift,
    sample_sigmas,
    vp_timesteps,
)

F64 = torch.float64
ABAR = vp_alphas_cumprod("linear", 1000)
SCHEDULE_ARGS = {
    "karras": {"sigma_min": 0.002, "sigma_max": 80.0},
    "exponential": {"sigma_min": 0.002, "sigma_max": 80.0},
    "logsnr": {"logsnr_min": -8.0, "logsnr_max": 12.0},
    "linspace": {"alphas_cumprod": ABAR},
    "leading": {"alphas_cumprod": ABAR, "steps_offset": 1},
    "trailing": {"alphas_cumprod": ABAR},
    "flow": {"shift": 3.0},
}


# =========================================================================== grids
def test_every_schedule_is_covered():
    assert set(SCHEDULE_ARGS) == set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("n", [1, 7, 25])
def test_every_grid_is_float64_strictly_decreasing_and_ends_at_zero(name, n):
    s = get_sigmas(name, n, **SCHEDULE_ARGS[name])
    assert s.dtype == F64 and s.shape == (n + 1,) and s[-1] == 0
    check_sigmas(s)
    assert (s[:-1] > 0).all()


def test_grid_formulas():
    n, smin, smax, rho = 10, 0.002, 80.0, 7.0
    k = karras_sigmas(n, smin, smax, rho)
    i = torch.arange(n, dtype=F64)
    ref = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho  # EDM eq. 5
    torch.testing.assert_close(k[:-1], ref, rtol=1e-14, atol=0)
    assert k[0] == pytest.approx(smax, rel=1e-14) and k[-2] == pytest.approx(smin, rel=1e-14)
    e = get_sigmas("exponential", n, sigma_min=smin, sigma_max=smax)
    ratios = e[1:-1] / e[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (smin / smax) ** (1 / (n - 1))))
    lam = logsnr(get_sigmas("logsnr", n, logsnr_min=-8.0, logsnr_max=12.0)[:-1])
    torch.testing.assert_close(lam, torch.linspace(-8.0, 12.0, n, dtype=F64))


def test_vp_timestep_spacings():
    # DDIM/diffusers conventions, T = 1000, 10 steps
    assert vp_timesteps(10, 1000, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert vp_timesteps(10, 1000, "leading", steps_offset=1).tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert vp_timesteps(10, 1000, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    for n in (3, 7, 13, 50, 999):
        for sp in ("linspace", "leading", "trailing"):
            t = vp_timesteps(n, 1000, sp)
            assert len(t) == n and (t[:-1] > t[1:]).all() and t.min() >= 0 and t.max() <= 999
    sig = get_sigmas("trailing", 10, alphas_cumprod=ABAR)
    torch.testing.assert_close(sig[:-1], alphas_cumprod_to_sigmas(ABAR)[vp_timesteps(10, 1000, "trailing")])
    with pytest.raises(ValueError, match="valid"):
        vp_timesteps(10, 1000, "middle")
    with pytest.raises(ValueError, match="exceeds"):
        vp_timesteps(2000, 1000, "linspace")




def test_trailing_spacing_has_n_steps_for_every_n():
    for T in (999, 1000, 1024):
        for n in range(1, T + 1):
            t = vp_timesteps(n, T, "trailing")
            assert len(t) == n and t.min() >= 0 and (t[:-1] > t[1:]).all(), (T, n, t[-3:].tolist())
    check_sigmas(get_sigmas("trailing", 61, alphas_cumprod=ABAR))


def test_trailing_spacing_matches_diffusers_for_every_n():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    for n in range(1, 1001):
        sched.set_timesteps(n)
        ref = sched.timesteps.tolist()
        if len(ref) == n and min(ref) >= 0:  # where diffusers itself does not overshoot
            assert vp_timesteps(n, 1000, "trailing").tolist() == ref, n


def test_vp_timesteps_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for spacing, offset in (("linspace", 0), ("leading", 1), ("trailing", 0)):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
        for n in (10, 25, 50):
            sched.set_timesteps(n)
            assert vp_timesteps(n, 1000, spacing, offset).tolist() == sched.timesteps.tolist(), (spacing, n)


def test_flow_grid_and_shift():
    n = 12
    base = flow_sigmas(n, shift=1.0)
    t = torch.linspace(1 - 1e-4, 0, n + 1, dtype=F64)[:-1]
    torch.testing.assert_close(base[:-1], t / (1 - t))
    # the SD3 shift t' = s t / (1 + (s - 1) t) is exactly sigma' = s sigma (Esser et al. 2024, eq. 23)
    torch.testing.assert_close(flow_sigmas(n, shift=3.0), 3.0 * base)
    with pytest.raises(ValueError):
        flow_sigmas(n, shift=0.0)
    with pytest.raises(ValueError):
        flow_sigmas(n, t_max=1.0)


def test_grid_bad_input():
    with pytest.raises(ValueError, match=r"valid names: \['exponential', 'flow', 'karras'"):
        get_sigmas("cosine", 10)
    with pytest.raises(ValueError, match="unknown argument"):
        get_sigmas("karras", 10, sigma_min=0.1, sigma_max=10.0, sigma_data=0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(10, 10.0, 1.0)
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0, 0.1, 1.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_sigmas(torch.tensor([3.0, 2.0, 2.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_sigmas(torch.tensor([1.0, 2.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="finite"):
        check_sigmas(torch.tensor([float("nan"), 0.0], dtype=F64))
    with pytest.raises(ValueError, match=">= 0"):
        check_sigmas(torch.tensor([1.0, -1.0], dtype=F64))
    with pytest.raises(ValueError, match="1-D"):
        check_sigmas(torch.tensor([[1.0, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="1-D"):
        check_sigmas(torch.tensor([1.0], dtype=F64))
    with pytest.raises(TypeError):
        check_sigmas([1.0, 0.0])


# =========================================================================== densities
N = 20000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_density_is_covered():
    assert set(DENSITIES) == {"lognormal", "uniform_discrete", "uniform_continuous", "logit_normal", "mode"}


def test_lognormal_density():
    ls = sample_sigmas("lognormal", N, p_mean=-1.2, p_std=1.2, generator=_gen()).log()
    assert ls.dtype == F64 and ls.shape == (N,)
    assert abs(ls.mean().item() + 1.2) < 4 * 1.2 / math.sqrt(N)
    assert abs(ls.std().item() / 1.2 - 1) < 0.03


def test_logit_normal_density():
    s = sample_sigmas("logit_normal", N, mean=0.5, std=0.8, generator=_gen())
    logit_t = torch.logit(sigma_to_flow_t(s))  # t = sigma / (1 + sigma) ~ logit-normal
    assert abs(logit_t.mean().item() - 0.5) < 4 * 0.8 / math.sqrt(N)
    assert abs(logit_t.std().item() / 0.8 - 1) < 0.03


def test_uniform_discrete_density():
    abar = vp_alphas_cumprod("linear", 10)
    s = sample_sigmas("uniform_discrete", N, alphas_cumprod=abar, generator=_gen())
    grid = alphas_cumprod_to_sigmas(abar)
    idx = (s[:, None] == grid[None]).to(torch.int64).argmax(1)
    assert torch.equal(grid[idx], s)  # every draw is a training sigma
    counts = torch.bincount(idx, minlength=10).to(F64)
    chi2 = ((counts - N / 10) ** 2 / (N / 10)).sum().item()
    assert chi2 < 30  # 9 dof: p ~ 4e-4


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_uniform_continuous_density(schedule):
    s = sample_sigmas("uniform_continuous", N, schedule=schedule, t_min=0.1, t_max=0.9, generator=_gen())
    abar = sigmas_to_alphas_cumprod(s)
    if schedule == "cosine":  # invert abar(t) = f(t)/f(0), f = cos^2((t + s)/(1 + s) pi/2)
        c = 0.008
        f0 = math.cos(c / (1 + c) * math.pi / 2) ** 2
        t = torch.acos((abar * f0).sqrt()) * 2 / math.pi * (1 + c) - c
    else:  # -log abar = t^2 (20 - 0.1) / 2 + 0.1 t
        L = -abar.log()
        t = (-0.1 + torch.sqrt(0.01 + 2 * 19.9 * L)) / 19.9
    assert t.min() >= 0.1 - 1e-9 and t.max() <= 0.9 + 1e-9
    # uniform on [0.1, 0.9]: mean 0.5, std 0.8 / sqrt(12)
    assert abs(t.mean().item() - 0.5) < 4 * 0.8 / math.sqrt(12 * N)
    assert abs(t.std().item() / (0.8 / math.sqrt(12)) - 1) < 0.03


@pytest.mark.parametrize("scale", [0.0, 1.29])
def test_mode_density(scale):
    t = sigma_to_flow_t(sample_sigmas("mode", N, scale=scale, generator=_gen()))
    f = lambda u: 1 - u - scale * (math.cos(math.pi / 2 * u) ** 2 - 1 + u)
    for q in (0.1, 0.5, 0.9):
        assert abs(torch.quantile(t, q).item() - f(1 - q)) < 0.015, q
    with pytest.raises(ValueError, match="mode scale"):
        sample_sigmas("mode", 4, scale=2.0)


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_shift_multiplies_sigma_and_generator_reproduces(name):
    params = {"alphas_cumprod": ABAR} if name == "uniform_discrete" else {}
    a = sample_sigmas(name, 64, generator=_gen(3), **params)
    b = sample_sigmas(name, 64, shift=2.5, generator=_gen(3), **params)
    assert a.shape == (64,) and a.dtype == F64 and (a > 0).all() and torch.isfinite(a).all()
    torch.testing.assert_close(b, 2.5 * a, rtol=1e-15, atol=0)
    assert torch.equal(sample_sigmas(name, 64, generator=_gen(3), **params), a)


def test_density_bad_input_and_length_shift():
    with pytest.raises(ValueError, match=r"valid names: \['logit_normal', 'lognormal', 'mode'"):
        sample_sigmas("beta", 4)
    with pytest.raises(ValueError, match="unknown parameter"):
        sample_sigmas("lognormal", 4, mean=0.0)
    with pytest.raises(ValueError, match="shift"):
        sample_sigmas("lognormal", 4, shift=-1.0)
    assert length_shift(4 * 48000, 48000) == pytest.approx(2.0)
    assert length_shift(1000, 4000, base_shift=3.0) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        length_shift(0, 10)


# =========================================================================== processes
def test_vp_conversions():
    g = _gen(1)
    x0, eps = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    abar = torch.tensor([0.999, 0.9, 0.5, 0.1, 1e-3], dtype=F64)
    sigma = alphas_cumprod_to_sigmas(abar)
    torch.testing.assert_close(sigma, ((1 - abar) / abar).sqrt())
    torch.testing.assert_close(sigmas_to_alphas_cumprod(sigma), abar)
    torch.testing.assert_close(vp_scale(sigma), abar.sqrt())
    x_vp = abar.sqrt()[:, None] * x0 + (1 - abar).sqrt()[:, None] * eps
    torch.testing.assert_close(get_process("vp").to_ve(x_vp, sigma), x0 + sigma[:, None] * eps)
    torch.testing.assert_close(get_process("vp").from_ve(x0 + sigma[:, None] * eps, sigma), x_vp)
    torch.testing.assert_close(logsnr(sigma), torch.log(abar / (1 - abar)))
    torch.testing.assert_close(sigma_from_logsnr(logsnr(sigma)), sigma)


def test_flow_conversions():
    g = _gen(2)
    x0, eps = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    t = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=F64)
    sigma = flow_t_to_sigma(t)
    torch.testing.assert_close(sigma_to_flow_t(sigma), t)
    torch.testing.assert_close(flow_scale(sigma), 1 - t)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * eps
    torch.testing.assert_close(get_process("flow").to_ve(x_t, sigma), x0 + sigma[:, None] * eps)
    torch.testing.assert_close(get_process("ve").to_ve(x_t, sigma), x_t)
    with pytest.raises(ValueError, match=r"valid names: \['flow', 've', 'vp'\]"):
        get_process("edm")
    assert set(PROCESSES) == {"ve", "vp", "flow"}


@pytest.mark.parametrize("name", sorted(BETA_SCHEDULES))
def test_beta_schedules(name):
    b = vp_betas(name, 1000)
    abar = vp_alphas_cumprod(name, 1000)
    assert b.dtype == F64 and b.shape == (1000,) and (b > 0).all() and (b < 1).all()
    assert (abar[1:] < abar[:-1]).all()
    torch.testing.assert_close(abar, torch.cumprod(1 - b, 0))
    if name == "linear":
        assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    if name == "scaled_linear":
        torch.testing.assert_close(b.sqrt(), torch.linspace(1e-4**0.5, 0.02**0.5, 1000, dtype=F64))
    if name == "cosine":  # Nichol & Dhariwal eq. 17 wherever beta is not clipped at 0.999
        t = torch.arange(1, 1001, dtype=F64) / 1000
        f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
        torch.testing.assert_close(abar[:-5], f[:-5], rtol=1e-9, atol=1e-12)
    if name == "sigmoid":
        assert (b[1:] > b[:-1]).all() and b[0] > 1e-4 and b[-1] < 0.02


def test_beta_schedule_bad_input():
    with pytest.raises(ValueError, match="valid names"):
        vp_betas("quadratic")
    with pytest.raises(ValueError, match="beta_start"):
        vp_betas("linear", 1000, 0.02, 1e-4)


def test_timestep_sigma_maps():
    train = alphas_cumprod_to_sigmas(ABAR)
    t = torch.arange(0, 1000, 37, dtype=F64)
    torch.testing.assert_close(sigma_to_timestep(train[t.long()], train), t)
    frac = torch.tensor([0.25, 10.5, 500.75, 998.1], dtype=F64)
    torch.testing.assert_close(sigma_to_timestep(timestep_to_sigma(frac, train), train), frac)
    s = timestep_to_sigma(frac, train)
    lo, hi = train[frac.floor().long()], train[frac.ceil().long()]
    assert ((s > lo) & (s < hi)).all()
