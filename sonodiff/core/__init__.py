"""The diffusion core: depends on torch alone.

One contract: a denoiser is ``D(x, sigma, cond) -> x0_hat`` with ``x`` the VE state ``[B, ...]`` and
``sigma`` ``[B]``. Schedules are plain functions, parameterizations live in ``Preconditioned``, samplers
are pure functions over a float64 sigma grid ending at 0, guidance and editing wrap denoisers.
"""

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import Preconditioned, discrete_vp_denoiser
from sonodiff.core.editing import (
    InpaintDenoiser,
    continuation_inputs,
    inpaint,
    prefix_mask,
    repaint,
    sdedit,
    sdedit_start,
    span_mask,
)
from sonodiff.core.guidance import AutoGuidance, ClassifierFreeGuidance, GradientGuidance
from sonodiff.core.likelihood import ELBOResult, LikelihoodResult, bits_per_dim, discrete_elbo, log_likelihood
from sonodiff.core.param import (
    PARAMETERIZATIONS,
    WEIGHTINGS,
    Parameterization,
    get_parameterization,
    loss_weight,
)
from sonodiff.core.processes import PROCESSES, get_process
from sonodiff.core.samplers import SAMPLERS, sample
from sonodiff.core.schedules import DENSITIES, SCHEDULES, get_sigmas, sample_sigmas

__all__ = [
    "Cond",
    "Preconditioned",
    "discrete_vp_denoiser",
    "Parameterization",
    "PARAMETERIZATIONS",
    "WEIGHTINGS",
    "get_parameterization",
    "loss_weight",
    "PROCESSES",
    "get_process",
    "SAMPLERS",
    "sample",
    "SCHEDULES",
    "DENSITIES",
    "get_sigmas",
    "sample_sigmas",
    "AutoGuidance",
    "ClassifierFreeGuidance",
    "GradientGuidance",
    "InpaintDenoiser",
    "inpaint",
    "repaint",
    "sdedit",
    "sdedit_start",
    "span_mask",
    "prefix_mask",
    "continuation_inputs",
    "log_likelihood",
    "discrete_elbo",
    "bits_per_dim",
    "LikelihoodResult",
    "ELBOResult",
]
