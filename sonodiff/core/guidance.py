"""Guidance as denoiser wrappers: every guided model is again a denoiser ``D(x, sigma, cond) -> x0_hat``.

Samplers never know about guidance (DESIGN rule 12): wrap the denoiser, then sample as usual::

    guided = ClassifierFreeGuidance(model, scale=4.0, rescale=0.7)
    x0 = sample(guided, x, sigmas, "dpmpp_2m", cond=cond)

Everything is written in x0 (denoised) space. Because x0_hat, eps_hat = (x - x0_hat) / sigma and the score
(x0_hat - x) / sigma^2 are affine in each other at fixed (x, sigma), a linear combination of denoised
estimates is the same linear combination of noise predictions or scores; only the rescale of Lin et al.
(a ratio of standard deviations) depends on the space, and it is applied to x0 here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import check_sigma
from sonodiff.core.shapes import bcast

__all__ = ["AutoGuidance", "ClassifierFreeGuidance", "GradientGuidance", "cfg_combine", "rescale_guidance"]

Denoiser = Callable[[Tensor, Tensor, "Cond | None"], Tensor]


# =========================================================================== the formulas
def cfg_combine(d_cond: Tensor, d_uncond: Tensor, scale: float | Tensor) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) in x0 space: D_u + w (D_c - D_u).

    ``d_cond``, ``d_uncond`` ``[B, ...]``; ``scale`` w a float or ``[B]``. Evaluated as w D_c + (1 - w) D_u, so
    that w = 1 returns D_c and w = 0 returns D_u bit for bit.
    """
    w = scale if not isinstance(scale, Tensor) else bcast(scale, d_cond).to(d_cond.dtype)
    return w * d_cond + (1 - w) * d_uncond


def rescale_guidance(d_guided: Tensor, d_cond: Tensor, phi: float) -> Tensor:
    """Rescaled CFG (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", eq. 15-16).

    x_rescaled = x_cfg * std(x_pos) / std(x_cfg);  x_final = phi x_rescaled + (1 - phi) x_cfg, with the
    standard deviations taken per example over all non-batch dims (as diffusers' ``rescale_noise_cfg``),
    here of x0 estimates. phi = 0 returns ``d_guided`` unchanged. Shapes ``[B, ...]``.
    """
    if phi == 0.0:
        return d_guided
    dims = tuple(range(1, d_guided.ndim))
    std_pos = d_cond.std(dim=dims, keepdim=True)
    std_cfg = d_guided.std(dim=dims, keepdim=True)
    rescaled = d_guided * (std_pos / std_cfg)
    return phi * rescaled + (1.0 - phi) * d_guided


def _check_guidance(scale, rescale: float, sigma_interval) -> None:
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale (phi) must be in [0, 1], got {rescale}")
    if sigma_interval is not None:
        lo, hi = sigma_interval
        if not 0.0 <= lo < hi:
            raise ValueError(f"sigma_interval must be (lo, hi) with 0 <= lo < hi, got {sigma_interval}")
    if isinstance(scale, Tensor) and scale.ndim != 1:
        raise ValueError(f"a tensor scale must have shape [B], got {tuple(scale.shape)}")


def _inside(sigma: Tensor, sigma_interval) -> Tensor | None:
    """``[B]`` bool: rows with lo < sigma <= hi (None: no interval, guide everywhere)."""
    if sigma_interval is None:
        return None
    lo, hi = sigma_interval
    return (sigma > lo) & (sigma <= hi)


# =========================================================================== classifier-free guidance
class ClassifierFreeGuidance:
    """Classifier-free guidance as a denoiser: ``CFG(x, sigma, cond) -> x0_hat`` ``[B, ...]``.

    D = D_u + scale (D_c - D_u), with D_c = denoiser(x, sigma, cond) and D_u the *negative branch*:
    ``denoiser(x, sigma, uncond)`` where ``uncond`` defaults to ``cond.null_all()`` (the learned null
    embeddings), or ``denoiser(x, sigma, negative)`` with negative conditioning (e.g. a negative prompt),
    which takes the place of the unconditional branch.

    Args:
        denoiser: ``D(x [B, ...], sigma [B], cond) -> x0_hat``.
        scale: guidance weight w (float, or a ``[B]`` tensor for per-example weights). 1 = no guidance.
        uncond: the unconditional ``Cond`` (batch B); default ``cond.null_all()`` at call time.
        negative: negative conditioning ``Cond`` (batch B) replacing the unconditional branch; exclusive with
            ``uncond``.
        rescale: phi of Lin et al. 2024 (eq. 15-16), in [0, 1], applied in x0 space (:func:`rescale_guidance`).
        sigma_interval: ``(lo, hi)``: guide only where lo < sigma <= hi (Kynkaanniemi et al. 2024, "Applying
            guidance in a limited interval..."); elsewhere the conditional estimate is returned and, when no
            row of the batch is inside, the negative branch is not evaluated at all.
        batched: evaluate both branches in one denoiser call on ``[2B, ...]`` (``Cond.cat`` along the
            batch; conditional rows first). ``False`` makes two calls; results are the same.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        scale: float | Tensor,
        *,
        uncond: Cond | None = None,
        negative: Cond | None = None,
        rescale: float = 0.0,
        sigma_interval: tuple[float, float] | None = None,
        batched: bool = True,
    ) -> None:
        if uncond is not None and negative is not None:
            raise ValueError("give either uncond or negative (negative conditioning replaces the unconditional branch), not both")
        _check_guidance(scale, rescale, sigma_interval)
        self.denoiser = denoiser
        self.scale = scale
        self.uncond = uncond if negative is None else negative
        self.rescale = float(rescale)
        self.sigma_interval = sigma_interval
        self.batched = batched

    def _negative_branch(self, cond: Cond, batch: int) -> Cond:
        neg = self.uncond if self.uncond is not None else cond.null_all()
        if neg.batch_size != batch:
            raise ValueError(f"the unconditional/negative Cond has batch size {neg.batch_size}, x has {batch}; repeat it to B rows")
        return neg

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        check_sigma(x, sigma)
        B = x.shape[0]
        if cond is None or cond.is_empty():
            raise ValueError("classifier-free guidance needs a non-empty cond for its conditional branch; got None/empty")
        if cond.batch_size != B:
            raise ValueError(f"cond has batch size {cond.batch_size}, x has {B}")
        if isinstance(self.scale, Tensor) and self.scale.shape[0] != B:
            raise ValueError(f"scale has shape {tuple(self.scale.shape)}, expected [{B}]")
        neg = self._negative_branch(cond, B)

        inside = _inside(sigma, self.sigma_interval)
        if inside is not None and not bool(inside.any()):
            return self.denoiser(x, sigma, cond)

        if self.batched:
            both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), Cond.cat([cond, neg]))
            d_cond, d_neg = both[:B], both[B:]
        else:
            d_cond = self.denoiser(x, sigma, cond)
            d_neg = self.denoiser(x, sigma, neg)
        out = rescale_guidance(cfg_combine(d_cond, d_neg, self.scale), d_cond, self.rescale)
        if inside is not None:
            out = torch.where(bcast(inside, out), out, d_cond)
        return out


# =========================================================================== autoguidance
class AutoGuidance:
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself") as a denoiser.

    D = D_guide + w (D_main - D_guide), both *conditional*: ``guide`` is a weaker model of the same task (smaller,
    or trained for fewer steps / with a shorter EMA) taking the same ``cond``. Where classifier-free guidance
    pushes away from the unconditional distribution (and so also changes the level and the spread of the
    samples), autoguidance pushes away only from the guide's errors, which the main model has fewer of.
    w = 1 returns the main model's estimate bit for bit; ``sigma_interval`` and ``rescale`` act as for
    :class:`ClassifierFreeGuidance`. ``cond`` may be None (unconditional models can be autoguided too).

    Args:
        denoiser: the main model ``D(x [B, ...], sigma [B], cond) -> x0_hat``.
        guide: the guiding model, same signature and the same data space (shape, normalisation).
        scale: guidance weight w (float or ``[B]``).
    """

    def __init__(self, denoiser: Denoiser, guide: Denoiser, scale: float | Tensor, *, rescale: float = 0.0,
                 sigma_interval: tuple[float, float] | None = None) -> None:
        _check_guidance(scale, rescale, sigma_interval)
        self.denoiser, self.guide, self.scale = denoiser, guide, scale
        self.rescale, self.sigma_interval = float(rescale), sigma_interval

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        check_sigma(x, sigma)
        B = x.shape[0]
        if cond is not None and cond.batch_size != B:
            raise ValueError(f"cond has batch size {cond.batch_size}, x has {B}")
        if isinstance(self.scale, Tensor) and self.scale.shape[0] != B:
            raise ValueError(f"scale has shape {tuple(self.scale.shape)}, expected [{B}]")
        inside = _inside(sigma, self.sigma_interval)
        if inside is not None and not bool(inside.any()):
            return self.denoiser(x, sigma, cond)
        d_main = self.denoiser(x, sigma, cond)
        d_guide = self.guide(x, sigma, cond)
        out = rescale_guidance(cfg_combine(d_main, d_guide, self.scale), d_main, self.rescale)
        if inside is not None:
            out = torch.where(bcast(inside, out), out, d_main)
        return out


# =========================================================================== gradient guidance
class GradientGuidance:
    """Guidance by the gradient of a differentiable score of the denoised estimate.

    With Tweedie's formula D(x, sigma) = x + sigma^2 grad_x log p_sigma(x), adding a log-likelihood
    log p(y | x) to the log-density gives the guided denoiser (classifier guidance, Dhariwal & Nichol 2021 /
    Ho & Salimans, written in x0 terms):

        D_y(x, sigma) = D(x, sigma) + scale * sigma^2 * grad_x log p(y | x_sigma = x).

    Universal guidance (Bansal et al. 2023, "forward guidance") replaces the noisy-input classifier by any
    differentiable score of the clean estimate, log p(y | x_sigma) ~= score(D(x, sigma)), with the gradient
    taken through the denoiser:  D_y = D + scale * sigma^2 * grad_x score(D(x, sigma), sigma, cond).
    With scale = 1 and ``score`` the exact log p(y | x_sigma) (expressed through D, which is possible for
    Gaussian data) D_y is exactly E[x0 | x_sigma, y]. The denoiser must be differentiable in ``x``.

    Args:
        denoiser: ``D(x [B, ...], sigma [B], cond) -> x0_hat``.
        score_fn: ``score_fn(x0_hat [B, ...], sigma [B], cond) -> [B]`` (e.g. a classifier's log-probability
            of the target class, or a CLAP/CLIP similarity); examples must not interact.
        scale: guidance strength (float or ``[B]``).
    """

    def __init__(self, denoiser: Denoiser, score_fn: Callable[[Tensor, Tensor, Cond | None], Tensor], scale: float | Tensor) -> None:
        if isinstance(scale, Tensor) and scale.ndim != 1:
            raise ValueError(f"a tensor scale must have shape [B], got {tuple(scale.shape)}")
        self.denoiser = denoiser
        self.score_fn = score_fn
        self.scale = scale

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        check_sigma(x, sigma)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = self.denoiser(xg, sigma, cond)
            s = self.score_fn(d, sigma, cond)
            if s.shape != (x.shape[0],):
                raise ValueError(f"score_fn must return one score per example, shape [{x.shape[0]}]; got {tuple(s.shape)}")
            (grad,) = torch.autograd.grad(s.sum(), xg)
        scale = self.scale if not isinstance(self.scale, Tensor) else bcast(self.scale, x).to(x.dtype)
        s2 = bcast(sigma.to(x.dtype) ** 2, x)
        return d.detach() + scale * s2 * grad.to(d.dtype)
