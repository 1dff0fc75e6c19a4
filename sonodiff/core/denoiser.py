"""The denoiser: ``Preconditioned(net, parameterization)`` and adapters for foreign models.

The one contract of sonodiff (k-diffusion's, and EDM's): a denoiser is ``D(x, sigma, cond) -> x0_hat`` with
``x`` the VE state ``[B, ...]`` and ``sigma`` ``[B]``. Samplers and guidance see nothing else.
``Preconditioned`` wraps a raw network ``net(x_in, c_noise, cond) -> F`` and also owns the training loss.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from sonodiff.core.cond import Cond
from sonodiff.core.param import Parameterization, get_parameterization, loss_weight
from sonodiff.core.processes import alphas_cumprod_to_sigmas, sigma_to_timestep
from sonodiff.core.schedules import sample_sigmas
from sonodiff.core.shapes import bcast

__all__ = ["Preconditioned", "discrete_vp_denoiser", "check_sigma"]


def check_sigma(x: Tensor, sigma: Tensor) -> None:
    """Raise unless ``sigma`` is a finite, non-negative ``[B]`` tensor matching ``x`` ``[B, ...]``."""
    if not isinstance(sigma, Tensor):
        raise TypeError(f"sigma must be a tensor of shape [B], got {type(sigma).__name__}")
    if sigma.ndim != 1 or x.ndim < 1 or sigma.shape[0] != x.shape[0]:
        raise ValueError(
            f"sigma must have shape [B] = [{x.shape[0] if x.ndim else '?'}] matching x {tuple(x.shape)}, "
            f"got {tuple(sigma.shape)}; expand a scalar with sigma.expand(x.shape[0])"
        )
    if not torch.isfinite(sigma).all() or (sigma < 0).any():
        raise ValueError(f"sigma must be finite and >= 0, got {sigma.tolist()}")


class Preconditioned(nn.Module):
    """D(x, sigma, cond) = c_skip x + c_out net(c_in x, c_noise, cond) (Karras et al. 2022, eq. 7).

    Args:
        net: the raw network ``net(x_in [B, ...], c_noise [B], cond) -> F [B, ...]`` (an ``nn.Module`` or a
            plain callable for foreign models). Its compute dtype is the dtype of its first floating parameter
            (float32 when it has none); inputs are cast to it and outputs cast back to ``x.dtype``.
        param: a name from ``PARAMETERIZATIONS`` ("edm", "eps", "x0", "v", "flow") or a ``Parameterization``.
        sigma_data: the data standard deviation (EDM default 0.5, others 1.0).
        c_noise: optional override ``sigma [B] float64 -> c_noise [B]`` (e.g. a discrete timestep map).
        density, density_params, shift: the training noise density of :meth:`loss` when no sigma is given
            (``sonodiff.core.schedules.DENSITIES``; default log-normal, logit-normal for flow).
        weighting, gamma: the loss weighting (``sonodiff.core.param.WEIGHTINGS``; default "native", the
            parameterization's own MSE).
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        param: str | Parameterization = "edm",
        *,
        sigma_data: float | None = None,
        c_noise: Callable[[Tensor], Tensor] | None = None,
        density: str | None = None,
        density_params: dict | None = None,
        shift: float = 1.0,
        weighting: str = "native",
        gamma: float = 5.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.param = get_parameterization(param, sigma_data)
        self._c_noise = c_noise
        self.density = density or ("logit_normal" if self.param.name == "flow" else "lognormal")
        self.density_params = dict(density_params or {})
        self.shift = float(shift)
        self.weighting = weighting
        self.gamma = float(gamma)
        loss_weight(weighting, self.param, torch.ones(1), gamma)  # validate names early
        sample_sigmas(self.density, 1, shift=self.shift, generator=torch.Generator().manual_seed(0), **self.density_params)

    # ------------------------------------------------------------------ helpers
    @property
    def compute_dtype(self) -> torch.dtype:
        if isinstance(self.net, nn.Module):
            for p in self.net.parameters():
                if p.is_floating_point():
                    return p.dtype
        return torch.float32

    def _coefficients(self, sigma: Tensor):
        c_skip, c_out, c_in, c_noise = self.param.coefficients(sigma)
        if self._c_noise is not None:
            c_noise = self._c_noise(sigma.to(torch.float64))
        return c_skip, c_out, c_in, c_noise

    def _net(self, x_in: Tensor, c_noise: Tensor, cond: Cond | None) -> Tensor:
        dt = self.compute_dtype
        if cond is not None:
            cond = cond.to(dtype=dt)
        return self.net(x_in.to(dt), c_noise.to(dt), cond)

    # ------------------------------------------------------------------ the denoiser
    def forward(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        """``x`` ``[B, ...]`` (VE state), ``sigma`` ``[B]`` -> x0_hat ``[B, ...]`` in ``x.dtype``."""
        check_sigma(x, sigma)
        c_skip, c_out, c_in, c_noise = self._coefficients(sigma)
        F = self._net(x * bcast(c_in, x).to(x.dtype), c_noise, cond)
        if F.shape != x.shape:
            raise RuntimeError(f"network returned shape {tuple(F.shape)} for input {tuple(x.shape)}; they must match")
        return bcast(c_skip, x).to(x.dtype) * x + bcast(c_out, x).to(x.dtype) * F.to(x.dtype)

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        x0: Tensor,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
        cond: Cond | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        weighting: str | None = None,
    ) -> Tensor:
        """Per-example weighted MSE ``[B]`` (float32).

        loss_i = mean_over_mask( lambda(sigma_i) c_out^2 (F - F*)^2 ), F* = (x0 - c_skip x) / c_out,
        which equals lambda(sigma) ||D - x0||^2 per element. ``x0`` ``[B, ...]`` clean data; ``sigma`` ``[B]``
        (drawn from the configured density when None); ``noise`` like ``x0`` (standard normal when None);
        ``mask`` broadcastable to ``x0`` (1 = real signal, 0 = padding), examples with an all-zero mask get 0.
        """
        B = x0.shape[0]
        dev = x0.device
        if sigma is None:
            sigma = sample_sigmas(
                self.density, B, shift=self.shift, generator=generator, device=dev, **self.density_params
            ).to(dev)
        check_sigma(x0, sigma)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else dev, dtype=x0.dtype).to(dev)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
        s = sigma.to(torch.float64)
        c_skip, c_out, c_in, c_noise = self._coefficients(s)
        a, b = self.param.target_coefficients(s)
        w = loss_weight(weighting or self.weighting, self.param, s, self.gamma)
        x = x0 + bcast(s, x0).to(x0.dtype) * noise
        F = self._net(x * bcast(c_in, x).to(x.dtype), c_noise, cond).float()
        target = bcast(a, x0).float() * x0.float() + bcast(b, x0).float() * noise.float()
        err = (F - target) ** 2 * bcast(w, x0).float()
        dims = tuple(range(1, x0.ndim))
        if mask is None:
            return err.mean(dim=dims) if dims else err
        m = torch.broadcast_to(mask.to(err.dtype), err.shape)
        return (err * m).sum(dim=dims) / m.sum(dim=dims).clamp_min(1.0)


def discrete_vp_denoiser(
    model: Callable[[Tensor, Tensor, Cond | None], Tensor],
    alphas_cumprod: Tensor,
    prediction: str = "eps",
    quantize: bool = False,
) -> Preconditioned:
    """Wrap a network trained elsewhere on discrete VP timesteps so every sonodiff sampler can use it.

    ``model(x_vp [B, ...], t [B], cond) -> eps | v | x0`` as trained (e.g. a diffusers ``UNet2DModel`` via
    ``lambda x, t, c: unet(x, t).sample``); ``alphas_cumprod`` ``[T]`` its training schedule. The VE state is
    scaled to x_vp = x / sqrt(1 + sigma^2) and sigma mapped to its (fractional, or rounded when
    ``quantize``) timestep by log-sigma interpolation, as k-diffusion's ``DiscreteEpsDDPMDenoiser`` does.
    """
    if prediction not in ("eps", "v", "x0"):
        raise ValueError(f"unknown prediction type {prediction!r} for a discrete VP model; valid: ['eps', 'v', 'x0']")
    train_sigmas = alphas_cumprod_to_sigmas(alphas_cumprod)

    def c_noise(sigma: Tensor) -> Tensor:
        t = sigma_to_timestep(sigma, train_sigmas)
        return t.round() if quantize else t

    return Preconditioned(model, prediction, sigma_data=1.0, c_noise=c_noise)
