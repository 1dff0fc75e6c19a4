"""ODE samplers against closed forms: convergence order over step halvings (Gaussian: exact flow; mixture: RK4)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from sonodiff.core import sample
from sonodiff.core.schedules import exponential_sigmas, karras_sigmas
from tests.core.conftest import make_gaussian, make_mixture, rk4_reference

pytestmark = pytest.mark.usefixtures("single_thread")

SMAX, SMIN = 80.0, 0.05
STEPS = [16, 32, 64, 128]

# (method, options, theoretical order, smallest accepted fitted slope)
CASES = [
    ("euler", {}, 1, 0.8),
    ("ddim", {"eta": 0.0}, 1, 0.8),
    ("heun", {}, 2, 1.7),
    ("dpm2", {}, 2, 1.7),
    ("lms", {"order": 4}, 3, 2.7),  # AB-4 with low-order start-up steps: about 3 in this range
    ("dpmpp_2m", {}, 2, 1.7),
    ("dpmpp_2m_sde", {"eta": 0.0}, 2, 1.7),
    ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, 2, 1.7),
    ("unipc", {"order": 2, "lower_order_final": False}, 2, 1.7),  # UniC adds one: measured ~2.8
    ("unipc", {"order": 3, "lower_order_final": False}, 3, 2.7),
    ("dpmpp_3m_sde", {"eta": 0.0}, 3, 2.7),
]


def _slope(errs: list[float]) -> float:
    """Least-squares slope of -log2(error) against log2(steps)."""
    xs = [math.log2(n) for n in STEPS]
    ys = [-math.log2(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


@functools.cache
def _problem(target: str):
    """(target, start state, reference solution at SMIN): computed once per test session."""
    gm = make_gaussian() if target == "gaussian" else make_mixture()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SMAX
    ref = gm.ode_solution(x, SMAX, SMIN) if target == "gaussian" else rk4_reference(gm, x, SMAX, SMIN, 400)
    return gm, x, ref


def _errors(target, method, opts):
    gm, x, ref = _problem(target)
    errs = []
    for n in STEPS:
        grid = exponential_sigmas(n, SMIN, SMAX)[:-1]  # stop at SMIN: the step to 0 (x = D) is common to all
        errs.append((sample(gm, x, grid, method, **opts) - ref).norm(dim=1).mean().item())
    return errs


@pytest.mark.parametrize("target", ["gaussian", "mixture"])
@pytest.mark.parametrize("method,opts,order,min_slope", CASES, ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_convergence_order(target, method, opts, order, min_slope):
    errs = _errors(target, method, opts)
    slope = _slope(errs)
    assert slope >= min_slope, f"{method} {opts} on {target}: errors {errs}, slope {slope:.2f} < {min_slope} (order {order})"
    assert errs[-1] < 0.02 / 2 ** (order - 1), f"{method}: error at {STEPS[-1]} steps too large: {errs}"


def test_dpmpp_3m_reference_weight_is_only_second_order():
    """The published 3M weight (-phi_3 on D2) stays at order 2; the Taylor weight (default) reaches 3."""
    ref_slope = _slope(_errors("mixture", "dpmpp_3m_sde", {"eta": 0.0, "d2_weight": "reference"}))
    taylor = _errors("mixture", "dpmpp_3m_sde", {"eta": 0.0})
    assert 1.7 <= ref_slope < 2.4, ref_slope
    assert _slope(taylor) >= 2.7


def test_ddim_eta0_equals_euler_in_ve(mixture):
    """DDIM (eta = 0) is Euler's method on the VE probability-flow ODE (Karras et al. 2022, Sec. 3)."""
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 40
    grid = karras_sigmas(12, 0.01, 40.0)
    torch.testing.assert_close(sample(mixture, x, grid, "ddim"), sample(mixture, x, grid, "euler"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,opts,order", [c[:3] for c in CASES] + [("langevin_pc", {"n_corrector": 0}, 1)])
def test_full_grid_to_zero_matches_exact_flow(gaussian, method, opts, order):
    """On a Karras grid ending at 0 every ODE sampler lands on D(exact flow at sigma_min, sigma_min)."""
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * SMAX
    grid = karras_sigmas(64, 0.002, SMAX)
    x_min = gaussian.ode_solution(x, SMAX, 0.002)
    target = gaussian.denoise(x_min, torch.full((32,), 0.002, dtype=torch.float64))
    out = sample(gaussian, x, grid, method, **{k: v for k, v in opts.items() if k != "lower_order_final"})
    err = (out - target).norm(dim=1).max().item()
    assert err < {1: 0.25, 2: 0.02, 3: 0.01}[order], f"{method}: max error {err}"


def test_float32_state_is_integrated_in_float64_and_returned_in_float32(gaussian):
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 10
    grid = exponential_sigmas(20, 0.05, 10.0)
    seen = []
    den = lambda x, s, c: (seen.append(x.dtype), gaussian.denoise(x, s))[1]
    out32 = sample(den, x.float(), grid, "dpmpp_2m")
    assert out32.dtype == torch.float32 and set(seen) == {torch.float64}
    torch.testing.assert_close(out32, sample(gaussian, x.float().double(), grid, "dpmpp_2m").float())
