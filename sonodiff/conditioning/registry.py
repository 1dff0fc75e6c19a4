"""The conditioner registry, rebuilding from a config, and saving a conditioner beside a model.

An exported model records its conditioner as ``conditioner.json`` (the config dict, e.g.
``{"type": "sentence", "path": null, ...}``: a *reference* to a local checkpoint, never a copy of it) and, when
the conditioner has learned tensors (class tables, number MLPs, projections, a fine-tuned encoder),
``conditioner.safetensors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sonodiff.conditioning.audio import ClapAudioConditioner
from sonodiff.conditioning.base import Conditioner, ConditionerConfig
from sonodiff.conditioning.compose import ComposedConditioner
from sonodiff.conditioning.inhouse_clap import InHouseClapConditioner
from sonodiff.conditioning.labels import ClassLabelConditioner
from sonodiff.conditioning.numbers import NumberConditioner, TimingConditioner
from sonodiff.conditioning.text import ClapTextEncoder, ClipTextEncoder, SentenceEncoder, T5TextEncoder
from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_text

__all__ = ["CONDITIONERS", "CONFIG_FILE", "WEIGHTS_FILE", "from_config", "load_conditioner", "save_conditioner"]

CONDITIONERS: dict[str, type[Conditioner]] = {
    "sentence": SentenceEncoder,
    "clap_text": ClapTextEncoder,
    "clip_text": ClipTextEncoder,
    "t5": T5TextEncoder,
    "clap_audio": ClapAudioConditioner,
    "clap_inhouse": InHouseClapConditioner,
    "class_label": ClassLabelConditioner,
    "number": NumberConditioner,
    "timing": TimingConditioner,
    "composed": ComposedConditioner,
}

CONFIG_FILE = "conditioner.json"
WEIGHTS_FILE = "conditioner.safetensors"


def from_config(config: ConditionerConfig | Mapping[str, Any]) -> Conditioner:
    """Build a conditioner from its config dataclass or its ``to_dict()`` form (``{"type": ..., ...}``)."""
    if isinstance(config, Mapping):
        t = config.get("type")
        if t not in CONDITIONERS:
            raise ValueError(f"unknown conditioner type {t!r}; valid types: {sorted(CONDITIONERS)}")
        config = CONDITIONERS[t].config_cls.from_dict(config)
    elif not isinstance(config, ConditionerConfig):
        raise ValueError(f"from_config takes a conditioner config or a dict, got {type(config).__name__}")
    if config.type not in CONDITIONERS:
        raise ValueError(f"unknown conditioner type {config.type!r}; valid types: {sorted(CONDITIONERS)}")
    cls = CONDITIONERS[config.type]
    if cls is ComposedConditioner:  # built here from its components' configs, so compose.py needs no registry
        comps = {n: from_config(c) for n, c in config.conditioners.items()}
        return ComposedConditioner(comps, config.how, pooled=config.pooled, token_dim=config.token_dim,
                                   pooled_dim=config.pooled_dim, dropout=config.dropout)
    return cls(config)


def save_conditioner(conditioner: Conditioner, directory: str | os.PathLike) -> Path:
    """Write ``conditioner.json`` and, if it has learned tensors, ``conditioner.safetensors`` (atomically)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = conditioner.weights()
    if tensors:
        atomic_save_tensors(d / WEIGHTS_FILE, tensors)
    elif (d / WEIGHTS_FILE).exists():
        (d / WEIGHTS_FILE).unlink()
    atomic_write_text(d / CONFIG_FILE, json.dumps(conditioner.config.to_dict(), indent=1, sort_keys=True))
    return d


def load_conditioner(directory: str | os.PathLike) -> Conditioner:
    """Rebuild what :func:`save_conditioner` wrote (frozen encoders are reloaded from their referenced path)."""
    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{str(d / CONFIG_FILE)!r} not found: not a saved conditioner directory")
    cond = from_config(json.loads((d / CONFIG_FILE).read_text()))
    if (d / WEIGHTS_FILE).is_file():
        from safetensors.torch import load_file

        cond.load_weights(load_file(str(d / WEIGHTS_FILE)))
    elif cond.weights():
        raise ValueError(f"{d} has no {WEIGHTS_FILE} but this {cond.name!r} conditioner has learned tensors "
                         f"{sorted(cond.weights())}")
    return cond
