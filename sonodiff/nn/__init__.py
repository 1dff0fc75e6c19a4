"""Denoiser networks ``net(x, c_noise, cond) -> F`` for :class:`sonodiff.core.denoiser.Preconditioned`.

Every network exposes ``in_channels``, ``out_channels``, ``dims`` and a frozen ``config`` dataclass with
``to_dict()`` / ``from_dict()``; :func:`save_network` / :func:`load_network` store it as ``config.json``
next to ``model.safetensors``. ``NETWORKS`` maps a name to a network class (its ``config_class`` parses the
config); a transformer denoiser can be registered beside the U-Net without touching the core or samplers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sonodiff.nn.config import UNetConfig
from sonodiff.nn.presets import UNET_PRESETS, unet_config
from sonodiff.nn.unet import UNet

__all__ = [
    "NETWORKS",
    "UNET_PRESETS",
    "UNet",
    "UNetConfig",
    "build_network",
    "load_network",
    "save_network",
    "unet_config",
]

NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet}


def _network_class(name: str) -> type[nn.Module]:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {sorted(NETWORKS)}")
    return NETWORKS[name]


def build_network(name: str, config) -> nn.Module:
    """Build ``NETWORKS[name]`` from its config dataclass or a plain dict (as stored in JSON)."""
    cls = _network_class(name)
    if isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    return cls(config)


def _network_name(net: nn.Module) -> str:
    for name, cls in NETWORKS.items():
        if type(net) is cls:
            return name
    raise ValueError(f"{type(net).__name__} is not a registered network; registered: {sorted(NETWORKS)}")


def save_network(net: nn.Module, directory: str | Path) -> None:
    """Write ``config.json`` (``{"network": name, "config": {...}}``) and ``model.safetensors`` to ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    spec = {"network": _network_name(net), "config": net.config.to_dict()}
    (d / "config.json").write_text(json.dumps(spec, indent=2) + "\n")
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(d / "model.safetensors")
    )


def load_network(directory: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Inverse of :func:`save_network`; loads strictly (missing or unexpected weights are errors)."""
    from safetensors.torch import load_file

    d = Path(directory)
    spec = json.loads((d / "config.json").read_text())
    if set(spec) != {"network", "config"}:
        raise ValueError(
            f"{d / 'config.json'} must have exactly the keys 'network' and 'config', got {sorted(spec)}"
        )
    net = build_network(spec["network"], spec["config"])
    net.load_state_dict(load_file(str(d / "model.safetensors"), device="cpu"), strict=True)
    return net.to(device)
