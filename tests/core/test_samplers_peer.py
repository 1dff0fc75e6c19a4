"""Peer equality with diffusers (test-only dependency): same sigma grid, same exact model, same numbers.

The exact model is the Gaussian-mixture denoiser written as an eps model on VP timesteps. DDIM, DPM-Solver
and UniPC schedulers work in VP space x_vp = x_ve / sqrt(1 + sigma^2); Euler and Heun in VE space with
scaled model inputs. The sonodiff grid is always the scheduler's own timesteps mapped to sigmas.
"""

from __future__ import annotations

import pytest
import torch

from sonodiff.core import discrete_vp_denoiser, sample
from sonodiff.core.processes import alphas_cumprod_to_sigmas
from sonodiff.core.schedules import leading_sigmas, linspace_sigmas, trailing_sigmas, vp_timesteps
from tests.core.conftest import make_mixture

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
B, DIM = 16, 2
RTOL = 1e-5


def _acp(scheduler) -> torch.Tensor:
    return scheduler.alphas_cumprod.to(torch.float64)


def _eps_from(gm, x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
    d = gm.denoise(x_ve, torch.full((x_ve.shape[0],), sigma, dtype=torch.float64))
    return (x_ve - d) / sigma


def _timestep_eps_model(gm, acp):
    """model(x_vp, t) -> eps on integer VP timesteps (what a diffusers UNet is)."""
    train_sigmas = alphas_cumprod_to_sigmas(acp)

    def model(x_vp, t, cond=None):
        t = torch.as_tensor(t).reshape(-1).expand(x_vp.shape[0])
        s = train_sigmas[t.round().long()].to(torch.float64)
        x_ve = x_vp.to(torch.float64) * torch.sqrt(1 + s**2).unsqueeze(1)
        return torch.stack([_eps_from(gm, x_ve[k : k + 1], float(s[k]))[0] for k in range(len(s))]).to(x_vp.dtype)

    return model


def _start(sigma0: float):
    return torch.randn(B, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (1 + sigma0**2) ** 0.5


def _assert_rel(a, b, rtol=RTOL):
    rel = ((a - b).norm() / b.norm()).item()
    assert rel < rtol, f"relative difference {rel:.2e}"


def _run_vp(scheduler, gm, x_ve, step_kwargs=lambda i: {}):
    """Run a VP-space diffusers scheduler (DDIM, DPM-Solver, UniPC) from the VE state x_ve at its first sigma."""
    acp = _acp(scheduler)
    model = _timestep_eps_model(gm, acp)
    t0 = scheduler.timesteps[0]
    x = x_ve / (1 + alphas_cumprod_to_sigmas(acp)[t0] ** 2) ** 0.5
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(model(x, t), t, x, **step_kwargs(i)).prev_sample
    return x  # the last step goes to alpha = 1: VP and VE coincide


def _vp_grid(scheduler):
    sig = alphas_cumprod_to_sigmas(_acp(scheduler))[scheduler.timesteps.long()]
    return torch.cat([sig, sig.new_zeros(1)])


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_vp_spacings_match_ddim_timesteps(spacing):
    sch = diffusers.DDIMScheduler(**CONFIG, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    acp = _acp(sch)
    for n in (10, 25, 50):
        sch.set_timesteps(n)
        offset = 1 if spacing == "leading" else 0
        assert torch.equal(vp_timesteps(n, 1000, spacing, offset), sch.timesteps.long())
        fn = {"leading": leading_sigmas, "linspace": linspace_sigmas, "trailing": trailing_sigmas}[spacing]
        torch.testing.assert_close(fn(n, acp, offset), _vp_grid(sch), rtol=1e-12, atol=0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(eta):
    gm = make_mixture()
    # diffusers' DDIM steps to t - T // n, the next timestep only when n divides T (here 1000 / 20)
    sch = diffusers.DDIMScheduler(**CONFIG, set_alpha_to_one=True, clip_sample=False, timestep_spacing="trailing")
    sch.set_timesteps(20)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    noise = [torch.randn(B, DIM, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64) for i in range(20)]
    ref = _run_vp(sch, gm, x, lambda i: {"eta": eta, "variance_noise": noise[i]})
    it = iter(noise)
    ours = sample(gm, x, grid, "ddim", eta=eta, noise_sampler=lambda s, sn: next(it))
    _assert_rel(ours, ref)


def test_discrete_vp_denoiser_adapter_matches_diffusers_ddim():
    """A foreign eps model on integer timesteps, wrapped by discrete_vp_denoiser, samples like diffusers."""
    gm = make_mixture()
    sch = diffusers.DDIMScheduler(**CONFIG, set_alpha_to_one=True, clip_sample=False, timestep_spacing="leading", steps_offset=1)
    sch.set_timesteps(10)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    den = discrete_vp_denoiser(_timestep_eps_model(gm, _acp(sch)), _acp(sch), "eps")
    _assert_rel(sample(den, x, grid, "ddim"), _run_vp(sch, gm, x), rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_discrete_vp_denoiser_recovers_exact_denoiser(prediction):
    gm = make_mixture()
    acp = _acp(diffusers.DDIMScheduler(**CONFIG))
    train_sigmas = alphas_cumprod_to_sigmas(acp)

    def model(x_vp, t, cond=None):
        s = train_sigmas[t.round().long()].to(torch.float64).unsqueeze(1)
        a, sv = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
        x_ve = x_vp.double() / a
        x0 = gm.denoise(x_ve, s[:, 0])
        eps = (x_ve - x0) / s
        return {"eps": eps, "v": a * eps - sv * x0, "x0": x0}[prediction].to(x_vp.dtype)

    den = discrete_vp_denoiser(model, acp, prediction)
    s = train_sigmas[torch.tensor([5, 100, 400, 900, 999])]
    x = gm.sample(5, torch.Generator().manual_seed(0)) + s.unsqueeze(1) * torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(den(x, s).double(), gm.denoise(x, s), rtol=1e-4, atol=1e-4)


def _run_ve(sch, gm, x):
    """Euler / Heun discrete schedulers: VE state, model input scaled by 1 / sqrt(1 + sigma^2)."""
    for t in sch.timesteps:
        inp = sch.scale_model_input(x, t)
        s = float(sch.sigmas[sch.step_index])
        eps = _eps_from(gm, inp * (1 + s**2) ** 0.5, s)
        x = sch.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("name,cls", [("euler", "EulerDiscreteScheduler"), ("heun", "HeunDiscreteScheduler")])
def test_euler_heun_match_diffusers(name, cls):
    gm = make_mixture()
    sch = getattr(diffusers, cls)(**CONFIG, timestep_spacing="linspace")
    sch.set_timesteps(10)
    sig = sch.sigmas.to(torch.float64)
    grid = torch.unique_consecutive(sig)  # Heun repeats its interior sigmas
    x = _start(float(grid[0])) * float(grid[0]) / (1 + float(grid[0]) ** 2) ** 0.5
    _assert_rel(sample(gm, x, grid, name), _run_ve(sch, gm, x))


def _dpm(**kw):
    return diffusers.DPMSolverMultistepScheduler(**CONFIG, final_sigmas_type="zero", **kw)


@pytest.mark.parametrize("n", [8, 20])
def test_dpmpp_2m_matches_diffusers(n):
    gm = make_mixture()
    sch = _dpm(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint")
    sch.set_timesteps(n)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    _assert_rel(sample(gm, x, grid, "dpmpp_2m"), _run_vp(sch, gm, x))


def test_dpmpp_3m_reference_weight_matches_diffusers_order_3():
    gm = make_mixture()
    # the warm-up 2nd-order step of k-diffusion's 3M is DPM-Solver++'s "heun" form
    sch = _dpm(algorithm_type="dpmsolver++", solver_order=3, solver_type="heun", lower_order_final=False)
    sch.set_timesteps(12)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    ref = _run_vp(sch, gm, x)
    _assert_rel(sample(gm, x, grid, "dpmpp_3m_sde", eta=0.0, d2_weight="reference"), ref)
    # the default (Taylor) weight is a different, more accurate method: it must not coincide
    assert ((sample(gm, x, grid, "dpmpp_3m_sde", eta=0.0) - ref).norm() / ref.norm()) > 1e-4


def test_dpmpp_2m_sde_matches_diffusers_with_shared_noise():
    gm = make_mixture()
    sch = _dpm(algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="midpoint")
    sch.set_timesteps(15)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    noise = [torch.randn(B, DIM, generator=torch.Generator().manual_seed(20 + i), dtype=torch.float64) for i in range(15)]
    ref = _run_vp(sch, gm, x, lambda i: {"variance_noise": noise[i]})
    it = iter(noise)
    ours = sample(gm, x, grid, "dpmpp_2m_sde", noise_sampler=lambda s, sn: next(it))
    _assert_rel(ours, ref)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("n", [6, 20])
def test_unipc_matches_diffusers(order, n):
    gm = make_mixture()
    sch = diffusers.UniPCMultistepScheduler(**CONFIG, solver_order=order, final_sigmas_type="zero")
    sch.set_timesteps(n)
    grid = _vp_grid(sch)
    x = _start(float(grid[0]))
    _assert_rel(sample(gm, x, grid, "unipc", order=order), _run_vp(sch, gm, x))
