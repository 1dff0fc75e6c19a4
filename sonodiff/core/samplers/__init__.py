"""Samplers: pure functions over a float64 sigma grid, one name -> function table.

Every sampler has the signature

    sample_<name>(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, stats=None, **options) -> Tensor

- ``denoiser(x [B, ...] float64, sigma [B] float64, cond) -> x0_hat [B, ...]``: the one contract; the denoiser
  casts to its own compute dtype. Its output must have x's shape and be finite (else ValueError /
  FloatingPointError naming the step and sigma).
- ``x`` ``[B, ...]``: the VE state at ``sigmas[0]`` (e.g. ``sigmas[0] * randn``), any float dtype; the state
  is integrated in float64 and returned in x's dtype.
- ``sigmas`` ``[N + 1]``: strictly decreasing, >= 0 (``sonodiff.core.schedules``); it normally ends at 0
  (a grid ending above 0 stops there: SDEdit segments, RePaint, convergence tests).
- ``generator``: None (global RNG), one ``torch.Generator``, or a list of B generators, one per example:
  then every random draw for example k (step noise, Brownian-tree seed, churn, Langevin noise) comes from
  generator k alone, so sample k is the same whatever the batch size.
- ``callback(info)`` after every step with ``{"i", "x", "sigma", "sigma_next", "denoised", "nfe"}``
  (``x`` the state at sigma_next, ``denoised`` the x0 estimate at sigma).
- ``stats``: an optional dict, filled with ``{"nfe": evaluations, "steps": N}`` on return.
- ``options``: the sampler's own keyword options (``sonodiff samplers`` lists them); unknown ones raise.

Names: ddpm, ddim, euler, euler_ancestral, heun, dpm2, lms, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde, unipc and
langevin_pc (any of them as predictor + the annealed Langevin corrector).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from torch import Tensor

from sonodiff.core.samplers import ode, stochastic
from sonodiff.core.samplers._run import Corrector, Run

__all__ = [
    "SAMPLERS",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm2",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_langevin_pc",
    "sample_lms",
    "sample_unipc",
    "sampler_options",
]

_IMPLS: dict[str, Callable] = {}


def _options_of(impl: Callable) -> dict:
    ps = inspect.signature(impl).parameters.values()
    return {p.name: p.default for p in ps if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_options(name: str, impl: Callable, options: dict) -> None:
    valid = _options_of(impl)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"sampler {name!r} got unknown option(s) {unknown}; its options are {sorted(valid)} "
                         "(plus cond, generator, callback, stats)")


def _public(name: str, impl: Callable) -> Callable:
    @functools.wraps(impl)
    def sampler(denoiser, x: Tensor, sigmas: Tensor, *, cond=None, generator=None, callback=None, stats=None,
                **options) -> Tensor:
        _check_options(name, impl, options)
        run = Run(denoiser, x, sigmas, cond, generator, callback, stats)
        return run.finish(impl(run, run.x, **options))

    sampler.__name__ = sampler.__qualname__ = f"sample_{name}"
    _IMPLS[name] = impl
    return sampler


def _langevin_pc(run: Run, x: Tensor, *, predictor: str = "euler", predictor_options: dict | None = None,
                 n_corrector: int = 1, snr: float = 0.16, s_noise: float = 1.0) -> Tensor:
    """Predictor-corrector sampling (Song et al. 2021b, "Score-Based Generative Modeling through SDEs", Alg. 4/5):
    each step of the ``predictor`` sampler (any name in SAMPLERS, with ``predictor_options``) is followed by
    ``n_corrector`` annealed Langevin steps at the new sigma with signal-to-noise ratio ``snr``.

    Multistep predictors keep their history (the model values at uncorrected states). NFE = predictor NFE
    + n_corrector per step that does not end at 0. The paper's VE defaults: snr 0.16 (CIFAR-10), 1 corrector.
    """
    if predictor not in _IMPLS or predictor == "langevin_pc":
        valid = sorted(n for n in _IMPLS if n != "langevin_pc")
        raise ValueError(f"unknown predictor {predictor!r}; valid names: {valid}")
    predictor_options = dict(predictor_options or {})
    impl = _IMPLS[predictor]
    _check_options(predictor, impl, predictor_options)
    run.corrector = Corrector(n_corrector, snr, s_noise)
    return impl(run, x, **predictor_options)


sample_ddpm = _public("ddpm", stochastic.ddpm)
sample_ddim = _public("ddim", stochastic.ddim)
sample_euler = _public("euler", ode.euler)
sample_euler_ancestral = _public("euler_ancestral", stochastic.euler_ancestral)
sample_heun = _public("heun", ode.heun)
sample_dpm2 = _public("dpm2", ode.dpm2)
sample_lms = _public("lms", ode.lms)
sample_dpmpp_2m = _public("dpmpp_2m", ode.dpmpp_2m)
sample_dpmpp_2m_sde = _public("dpmpp_2m_sde", stochastic.dpmpp_2m_sde)
sample_dpmpp_3m_sde = _public("dpmpp_3m_sde", stochastic.dpmpp_3m_sde)
sample_unipc = _public("unipc", ode.unipc)
sample_langevin_pc = _public("langevin_pc", _langevin_pc)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm2": sample_dpm2,
    "lms": sample_lms,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "unipc": sample_unipc,
    "langevin_pc": sample_langevin_pc,
}


def sampler_options(name: str) -> dict:
    """The options of sampler ``name`` with their defaults, e.g. ``{"eta": 1.0, "s_noise": 1.0, ...}``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid names: {sorted(SAMPLERS)}")
    return _options_of(_IMPLS[name])


def sample(denoiser, x: Tensor, sigmas: Tensor, method: str, *, cond=None, generator=None, callback=None,
           **options) -> Tensor:
    """Sample with the sampler named ``method`` (see the module docstring for every argument).

    ``x`` ``[B, ...]`` is the VE state at ``sigmas[0]``; returns the state at ``sigmas[-1]`` (the clean
    sample when the grid ends at 0) in x's dtype. ``stats={}`` among the options receives the NFE.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; valid names: {sorted(SAMPLERS)}")
    return SAMPLERS[method](denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, **options)
