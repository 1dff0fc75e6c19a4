"""Parameterizations: how a raw network output F becomes a denoiser D, and loss weightings.

All parameterizations share the EDM form (Karras et al. 2022, eq. 7):

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

with ``x = x0 + sigma * n`` the VE state. Each differs only in its four coefficients:

| name  | network predicts                 | c_skip               | c_out                    | c_in               | c_noise      |
|-------|----------------------------------|----------------------|--------------------------|--------------------|--------------|
| edm   | EDM's preconditioned target      | sd^2/(s^2+sd^2)      | s sd / sqrt(s^2+sd^2)    | 1/sqrt(s^2+sd^2)   | ln(s)/4      |
| eps   | the noise n (Ho et al. 2020)     | 1                    | -s                       | 1/sqrt(s^2+sd^2)   | ln(s)/4      |
| x0    | the clean signal                 | 0                    | 1                        | 1/sqrt(s^2+sd^2)   | ln(s)/4      |
| v     | v = a n - b x0 (Salimans & Ho 22)| sd^2/(s^2+sd^2)      | -s sd / sqrt(s^2+sd^2)   | 1/sqrt(s^2+sd^2)   | ln(s)/4      |
| flow  | velocity n - x0 (rectified flow) | 1/(1+s)              | -s/(1+s)                 | 1/(1+s)            | t = s/(1+s)  |

With sd = 1, ``eps`` and ``v`` take exactly the VP input x_vp = x / sqrt(1 + s^2) of DDPM-style models and
``flow`` takes x_t = (1 - t) x0 + t n. The training target for F follows from D = x0:
F* = (x0 - c_skip x) / c_out.

Loss weightings are written as lambda(sigma) multiplying the clean-signal error ||D - x0||^2 so that
they mean the same thing under every parameterization; the loss itself is computed in F space with
weight lambda * c_out^2 (numerically stable at both ends of the sigma range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

__all__ = [
    "Parameterization",
    "PARAMETERIZATIONS",
    "get_parameterization",
    "WEIGHTINGS",
    "loss_weight",
]


@dataclass(frozen=True)
class Parameterization:
    """Coefficients of D = c_skip x + c_out F(c_in x, c_noise). ``sigma`` is any float tensor; all maths in float64."""

    name: Literal["edm", "eps", "x0", "v", "flow"]
    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in _COEFFS:
            raise ValueError(f"unknown parameterization {self.name!r}; valid names: {sorted(_COEFFS)}")
        if not (self.sigma_data > 0 and math.isfinite(self.sigma_data)):
            raise ValueError(f"sigma_data must be a positive finite float, got {self.sigma_data}")

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise), each float64 with the shape of ``sigma``."""
        s = sigma.to(torch.float64)
        return _COEFFS[self.name](s, float(self.sigma_data))

    def target_coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) with F* = a x0 + b n, the network target for x = x0 + sigma n (exact, no cancellation)."""
        s = sigma.to(torch.float64)
        c_skip, c_out, _, _ = _COEFFS[self.name](s, float(self.sigma_data))
        return (1.0 - c_skip) / c_out, -c_skip * s / c_out


def _edm(s: Tensor, sd: float):
    r = torch.rsqrt(s**2 + sd**2)
    return sd**2 * r**2, s * sd * r, r, torch.log(s) / 4


def _eps(s: Tensor, sd: float):
    return torch.ones_like(s), -s, torch.rsqrt(s**2 + sd**2), torch.log(s) / 4


def _x0(s: Tensor, sd: float):
    return torch.zeros_like(s), torch.ones_like(s), torch.rsqrt(s**2 + sd**2), torch.log(s) / 4


def _v(s: Tensor, sd: float):
    r = torch.rsqrt(s**2 + sd**2)
    return sd**2 * r**2, -s * sd * r, r, torch.log(s) / 4


def _flow(s: Tensor, sd: float):
    inv = 1.0 / (1.0 + s)
    return inv, -s * inv, inv, s * inv


_COEFFS: dict[str, Callable[[Tensor, float], tuple[Tensor, Tensor, Tensor, Tensor]]] = {
    "edm": _edm,
    "eps": _eps,
    "x0": _x0,
    "v": _v,
    "flow": _flow,
}

PARAMETERIZATIONS: tuple[str, ...] = tuple(_COEFFS)


def get_parameterization(name: str | Parameterization, sigma_data: float | None = None) -> Parameterization:
    """Resolve a name (``PARAMETERIZATIONS``) to a :class:`Parameterization`. EDM defaults to sigma_data=0.5."""
    if isinstance(name, Parameterization):
        if sigma_data is not None and sigma_data != name.sigma_data:
            raise ValueError(f"sigma_data={sigma_data} conflicts with the given parameterization's {name.sigma_data}")
        return name
    if name not in _COEFFS:
        raise ValueError(f"unknown parameterization {name!r}; valid names: {sorted(_COEFFS)}")
    if sigma_data is None:
        sigma_data = 0.5 if name == "edm" else 1.0
    return Parameterization(name, sigma_data)


# =========================================================================== weightings (x0 space)
def _w_native(s, sd, gamma, c_out):
    return 1.0 / c_out**2  # the parameterization's own MSE in F space


def _w_uniform(s, sd, gamma, c_out):
    return torch.ones_like(s)


def _w_edm(s, sd, gamma, c_out):
    return (s**2 + sd**2) / (s * sd) ** 2  # Karras et al. 2022, Table 1 lambda(sigma)


def _w_snr(s, sd, gamma, c_out):
    return 1.0 / s**2  # = eps-MSE (DDPM "simple" loss)


def _w_min_snr(s, sd, gamma, c_out):
    return torch.clamp(1.0 / s**2, max=gamma)  # Hang et al. 2023, min(SNR, gamma)


def _w_soft_min_snr(s, sd, gamma, c_out):
    return 1.0 / (s**2 + 1.0 / gamma)  # Crowson et al. 2024 (HDiT): 1 / (1/SNR + 1/gamma)


WEIGHTINGS: dict[str, Callable[..., Tensor]] = {
    "native": _w_native,
    "uniform": _w_uniform,
    "edm": _w_edm,
    "snr": _w_snr,
    "min_snr": _w_min_snr,
    "soft_min_snr": _w_soft_min_snr,
}


def loss_weight(weighting: str, param: Parameterization, sigma: Tensor, gamma: float = 5.0) -> Tensor:
    """Weight on the F-space squared error: lambda(sigma) * c_out(sigma)^2 (float64, shape of ``sigma``).

    ``weighting`` names lambda, the weight on ||D - x0||^2 (``WEIGHTINGS``); ``gamma`` is the SNR cap of
    ``min_snr`` and ``soft_min_snr``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; valid names: {sorted(WEIGHTINGS)}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    s = sigma.to(torch.float64)
    _, c_out, _, _ = param.coefficients(s)
    lam = WEIGHTINGS[weighting](s, float(param.sigma_data), float(gamma), c_out)
    return lam * c_out**2
