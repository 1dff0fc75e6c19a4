"""Shared helpers for the network tests (tiny configs, weight perturbation)."""

from __future__ import annotations

import torch

from sonodiff.nn import UNet, unet_config


def tiny(dims: int, seed: int = 0, **overrides) -> UNet:
    """A tiny U-Net built from a seed (so tests are reproducible)."""
    torch.manual_seed(seed)
    return UNet(unet_config(f"tiny-{dims}d", **overrides))


def wake(net: torch.nn.Module, seed: int = 1, std: float = 0.1) -> torch.nn.Module:
    """Replace every all-zero parameter (zero-initialised branches) by small random values, so every path of
    the network influences the output (a fresh network returns exactly 0 and would make most checks vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() and bool((p == 0).all()):
                p.copy_(std * torch.randn(p.shape, generator=g))
    return net


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
