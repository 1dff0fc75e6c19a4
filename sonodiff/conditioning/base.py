"""The conditioner contract, its configs and dropout for classifier-free guidance.

A conditioner turns user inputs (captions, labels, numbers, audio prompts) into a :class:`~sonodiff.core.cond.Cond`
in two steps, so that the expensive step runs where it should (the audiocraft split):

- ``tokenize(inputs) -> batch``: CPU only, cheap, deterministic; runs in data-loader workers (call it from the
  ``collate_fn`` on a list of per-example inputs). It returns plain tensors or dicts of tensors. The object
  returned by :meth:`Conditioner.get_tokenizer` does the same work and pickles small (no model weights), so
  it can be sent to worker processes.
- ``forward(batch, *, drop=False, generator=None) -> Cond``: an ``nn.Module`` call on the model's device.

Frozen by default for pretrained encoders (``trainable=False``): parameters have ``requires_grad=False``, the
module stays in eval mode even when a parent calls ``.train()``, and ``forward`` runs under ``torch.no_grad``.
Conditioners whose parameters only make sense when learned (class labels, numbers, timing) default to
``trainable=True``.

Widths a network is sized from: ``token_dim`` (``D`` of ``Cond.tokens``; 0 = no tokens), ``pooled_dim``
(``D`` of ``Cond.pooled``; 0 = none) and ``out_dim`` (the conditioner's native width: ``pooled_dim`` when it
emits a pooled vector, else ``token_dim``).

Classifier-free guidance dropout (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022): with
``drop=True`` each row becomes ``Cond.null`` with probability ``config.dropout`` (uniforms drawn with
``generator``); the network substitutes its learned null embeddings for those rows.

Every config is a frozen dataclass with a ``type`` (its registry name), ``to_dict()`` (JSON-serialisable) and
``from_dict()`` (unknown keys and wrong types raise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sonodiff.core.cond import Cond
from sonodiff.utils.config import from_dict

__all__ = ["Conditioner", "ConditionerConfig", "draw_drop_mask", "masked_mean", "to_device"]


class ConditionerConfig:
    """Mixin for the frozen config dataclasses: ``type`` (registry name), ``to_dict`` and ``from_dict``."""

    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        values = dict(values)
        t = values.pop("type", cls.type)
        if t != cls.type:
            raise ValueError(f"{cls.__name__} is for conditioner type {cls.type!r}, got a config of type {t!r}")
        return from_dict(cls, values, cls.__name__)


def check_probability(p: float, what: str = "dropout") -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be a probability in [0, 1], got {p}")


def draw_drop_mask(batch_size: int, p: float, generator: torch.Generator | None, device) -> Tensor:
    """``[B]`` bool, each row True with probability ``p``; uniforms drawn on the generator's device."""
    check_probability(p)
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(batch_size, generator=generator, device=gen_device)
    return (u < p).to(device)


def masked_mean(states: Tensor, mask: Tensor) -> Tensor:
    """``states [B, L, D]``, ``mask [B, L]`` bool -> ``[B, D]``: mean over real positions, in float32.

    This is sentence-transformers' mean pooling (Reimers & Gurevych, "Sentence-BERT", 2019): padding positions
    contribute nothing, so extra padding leaves the result unchanged. Rows with no real position give zeros.
    """
    m = mask.to(torch.float32).unsqueeze(-1)
    total = (states.float() * m).sum(dim=1)
    return total / m.sum(dim=1).clamp(min=1.0)


class Conditioner(nn.Module):
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, config) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise ValueError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        check_probability(config.dropout)
        self.config = config

    # --- widths ---------------------------------------------------------------------------------
    @property
    def token_dim(self) -> int:
        return 0

    @property
    def pooled_dim(self) -> int:
        return 0

    @property
    def out_dim(self) -> int:
        return self.pooled_dim or self.token_dim

    @property
    def trainable(self) -> bool:
        return bool(self.config.trainable)

    # --- the two steps --------------------------------------------------------------------------
    def get_tokenizer(self):
        """A small picklable callable ``inputs -> batch`` (no model weights) for data-loader workers."""
        raise NotImplementedError

    def tokenize(self, inputs) -> dict[str, Tensor]:
        return self.get_tokenizer()(inputs)

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        """The conditioner's own computation (no dropout); subclasses implement it."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Tensor], *, drop: bool = False,
                generator: torch.Generator | None = None) -> Cond:
        """``batch`` from :meth:`tokenize` -> ``Cond`` on this module's device.

        ``drop=True`` applies classifier-free guidance dropout with probability ``config.dropout`` (rows
        become ``Cond.null``), drawing with ``generator``.
        """
        if self.trainable:
            cond = self.encode(batch)
        else:
            with torch.no_grad():
                cond = self.encode(batch)
        return cond.drop(self.config.dropout, generator) if drop else cond

    def encode_inputs(self, inputs, *, drop: bool = False, generator: torch.Generator | None = None) -> Cond:
        """Convenience: ``forward(tokenize(inputs))`` (the tokenizer output is moved to this module's device)."""
        return self(self.tokenize(inputs), drop=drop, generator=generator)

    # --- frozen by default ----------------------------------------------------------------------
    def _apply_freezing(self) -> None:
        if not self.trainable:
            for p in self.parameters():
                p.requires_grad_(False)
            nn.Module.train(self, False)

    def train(self, mode: bool = True):
        """Frozen conditioners stay in eval mode whatever ``mode`` is (documented in the module docstring)."""
        return super().train(mode if self.trainable else False)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # --- persistence ----------------------------------------------------------------------------
    def weights(self) -> dict[str, Tensor]:
        """Tensors that are *not* recoverable from ``config`` alone (learned tables, fine-tuned encoders).

        Frozen pretrained encoders return ``{}``: their config references the local checkpoint instead.
        """
        return {k: v.detach() for k, v in self.state_dict().items()}

    def load_weights(self, tensors: Mapping[str, Tensor]) -> None:
        own = self.weights()
        if set(tensors) != set(own):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise ValueError(f"{type(self).__name__}.load_weights: missing {missing}, unexpected {extra}")
        self.load_state_dict(dict(tensors), strict=False)


def to_device(batch: Mapping[str, Any], device) -> dict[str, Any]:
    """Move a (possibly nested) dict of tensors to ``device``."""
    return {k: (to_device(v, device) if isinstance(v, Mapping) else v.to(device)) for k, v in batch.items()}
