"""The sampler API: name table, options, callback, NFE stats, cond pass-through and clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from sonodiff.core import SAMPLERS, sample
from sonodiff.core.samplers import sampler_options
from sonodiff.core.schedules import karras_sigmas
from tests.core.conftest import make_mixture

GRID = karras_sigmas(6, 0.05, 10.0)


def _x(B=4):
    return torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10


# NFE on a grid of N steps ending at 0 (heun/dpm2: 2 per step but the last; langevin: + 1 per step but the last)
def _expected_nfe(name, n):
    return {"heun": 2 * n - 1, "dpm2": 2 * n - 1, "langevin_pc": 2 * n - 1}.get(name, n)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_counts_nfe_calls_back_and_passes_cond(name):
    gm = make_mixture()
    calls, infos, conds = [], [], []

    def den(x, sigma, cond):
        calls.append(sigma)
        conds.append(cond)
        assert x.dtype == torch.float64 and sigma.shape == (x.shape[0],) and sigma.dtype == torch.float64
        return gm.denoise(x, sigma)

    stats, token = {}, object()
    out = sample(den, _x().float(), GRID, name, cond=token, callback=infos.append, stats=stats,
                 generator=torch.Generator().manual_seed(1))
    n = len(GRID) - 1
    assert out.dtype == torch.float32 and out.shape == (4, 2) and torch.isfinite(out).all()
    assert stats == {"nfe": len(calls), "steps": n} and len(calls) == _expected_nfe(name, n)
    assert all(c is token for c in conds)
    assert [i["i"] for i in infos] == list(range(n))
    assert set(infos[0]) == {"i", "x", "sigma", "sigma_next", "denoised", "nfe"}
    assert [i["sigma_next"] for i in infos] == GRID[1:].tolist()
    assert infos[-1]["nfe"] == len(calls) and torch.equal(infos[-1]["x"].float(), out)
    # lands near the data (a sanity check: the mixture's means lie within |x| < 8)
    assert out.abs().max() < 12


def test_grid_not_ending_at_zero_stops_there():
    gm = make_mixture()
    x = _x()
    s0, s1 = 5.0, 2.0
    out = sample(gm, x, torch.tensor([s0, s1], dtype=torch.float64), "euler")
    d = gm.denoise(x, torch.full((4,), s0, dtype=torch.float64))
    torch.testing.assert_close(out, d + (s1 / s0) * (x - d))


def test_sampler_options_lists_defaults():
    assert sampler_options("heun") == {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
    assert sampler_options("unipc")["order"] == 2 and sampler_options("dpmpp_2m_sde")["solver_type"] == "midpoint"
    with pytest.raises(ValueError, match="valid names"):
        sampler_options("nope")


# =========================================================================== bad input
def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown sampler 'eulerr'.*'euler'"):
        sample(make_mixture(), _x(), GRID, "eulerr")


@pytest.mark.parametrize("name,opts,match", [
    ("euler", {"eta": 0.5}, r"unknown option\(s\) \['eta'\]; its options are \[\]"),
    ("ddim", {"etaa": 0.5}, r"'eta'"),
    ("langevin_pc", {"predictor_options": {"order": 3}}, r"unknown option"),
])
def test_unknown_options_raise(name, opts, match):
    with pytest.raises(ValueError, match=match):
        sample(make_mixture(), _x(), GRID, name, **opts)
    if "predictor_options" not in opts:  # the functions in the table check too
        with pytest.raises(ValueError, match=match):
            SAMPLERS[name](make_mixture(), _x(), GRID, **opts)


@pytest.mark.parametrize("name,opts,match", [
    ("ddim", {"eta": 1.5}, "eta must be in"),
    ("euler_ancestral", {"s_noise": -1.0}, "s_noise"),
    ("unipc", {"order": 4}, "order must be 1, 2 or 3"),
    ("unipc", {"solver_type": "bh3"}, "solver_type"),
    ("lms", {"order": 0}, "order"),
    ("dpmpp_2m_sde", {"solver_type": "rk4"}, "solver_type"),
    ("dpmpp_3m_sde", {"d2_weight": "x"}, "d2_weight"),
    ("langevin_pc", {"predictor": "langevin_pc"}, "unknown predictor"),
    ("langevin_pc", {"snr": 0.0}, "snr"),
    ("heun", {"s_churn": -1.0}, "s_churn"),
])
def test_bad_option_values_raise(name, opts, match):
    with pytest.raises(ValueError, match=match):
        sample(make_mixture(), _x(), GRID, name, **opts)


@pytest.mark.parametrize("grid,match", [
    (torch.tensor([10.0, 10.0, 0.0], dtype=torch.float64), "strictly decreasing"),
    (torch.tensor([1.0, 5.0, 0.0], dtype=torch.float64), "strictly decreasing"),
    (torch.tensor([10.0, float("nan"), 0.0], dtype=torch.float64), "finite"),
    (torch.tensor([1.0, -1.0], dtype=torch.float64), ">= 0"),
    (torch.tensor([1.0], dtype=torch.float64), "at least 2"),
])
@pytest.mark.parametrize("name", ["euler", "dpmpp_2m_sde"])
def test_bad_grids_raise(grid, match, name):
    with pytest.raises(ValueError, match=match):
        sample(make_mixture(), _x(), grid, name)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_denoiser_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=r"denoiser returned \(4, 3\) for x of shape \(4, 2\) at step 0"):
        sample(lambda x, s, c: torch.zeros(4, 3, dtype=x.dtype), _x(), GRID, name)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nan_from_denoiser_names_step_and_sigma(name):
    gm = make_mixture()

    def den(x, s, c):
        d = gm.denoise(x, s)
        return d * float("nan") if float(s[0]) < 3.0 else d

    with pytest.raises(FloatingPointError, match=r"NaN/inf at step \d+ \(sigma=[0-9.]+"):
        sample(den, _x(), GRID, name)


def test_bad_state_and_stats_raise():
    with pytest.raises(ValueError, match="floating"):
        sample(make_mixture(), torch.zeros(4, 2, dtype=torch.long), GRID, "euler")
    with pytest.raises(TypeError, match="stats"):
        sample(make_mixture(), _x(), GRID, "euler", stats=[])
    with pytest.raises(TypeError, match="generator"):
        sample(make_mixture(), _x(), GRID, "ddpm", generator=3)
