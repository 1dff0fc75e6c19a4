"""Exponential moving average of weights with a half-life measured in training samples.

Karras et al. (2022), Appendix: beta = 0.5 ** (batch / half_life_samples), with a warm-up that caps the
half-life at ``rampup * samples_seen`` so early averages do not remember the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Holds an averaged copy of ``model``'s parameters and buffers (float32, same device).

    Args:
        model: the live model (its state is copied, never modified).
        half_life_samples: samples after which an update's weight has halved (0 disables averaging:
            the EMA then equals the model).
        rampup: warm-up ratio; the effective half-life is min(half_life, rampup * samples_seen). None = off.
    """

    def __init__(self, model: nn.Module, half_life_samples: float, rampup: float | None = 0.05) -> None:
        if half_life_samples < 0:
            raise ValueError(f"half_life_samples must be >= 0, got {half_life_samples}")
        if rampup is not None and rampup <= 0:
            raise ValueError(f"rampup must be > 0 or None, got {rampup}")
        self.half_life = float(half_life_samples)
        self.rampup = rampup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def beta(self, batch: int, samples_seen: int) -> float:
        if self.half_life == 0:
            return 0.0
        h = self.half_life
        if self.rampup is not None:
            h = min(h, self.rampup * samples_seen)
        return 0.5 ** (batch / max(h, 1e-8))

    @torch.no_grad()
    def update(self, model: nn.Module, batch: int, samples_seen: int) -> float:
        """Average ``model`` in after a step of ``batch`` samples; ``samples_seen`` counts them too."""
        b = self.beta(batch, samples_seen)
        for pe, pm in zip(self.model.parameters(), model.parameters()):
            pe.lerp_(pm.detach().to(pe.dtype), 1.0 - b)
        for be, bm in zip(self.model.buffers(), model.buffers()):
            be.copy_(bm)
        return b

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
