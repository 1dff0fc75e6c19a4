"""Composition of several conditioners into one ``Cond``.

``ComposedConditioner({"text": t5, "timing": timing}, how={"text": "tokens", "timing": "both"})``:

- ``how[name]`` is the route each component feeds: ``"tokens"``, ``"pooled"`` or ``"both"`` (default: the routes
  the component produces). A component without tokens feeds the token route as one token ``[B, 1, D]`` (its
  pooled vector, mask True: Stable Audio's timing tokens); one without a pooled vector feeds the pooled route
  with the masked mean of its tokens.
- Tokens are concatenated along ``L`` in the order of the mapping, masks with them. Components of different
  widths are projected to ``token_dim`` (default: the widest) by a learned linear map.
- Pooled vectors are concatenated (``pooled="concat"``, width = the sum) or summed (``pooled="sum"``; widths that
  differ from ``pooled_dim``, default the widest, are projected by a learned linear map).

The projections are this module's own parameters and always trainable; each component keeps its own freezing.

Dropout (``drop=True``), drawn with ``generator`` in a fixed order (components in mapping order, then the
composition):

- attribute dropout per component (MusicGen, Copet et al. 2023): with probability ``component.config.dropout`` a
  row loses that component only (its tokens are masked out and zeroed, its pooled contribution is zero), so the
  network learns to work with any subset of conditions;
- classifier-free guidance dropout of the composition: with probability ``config.dropout`` the whole row becomes
  ``Cond.null`` (the network's learned null embeddings; Ho & Salimans 2022). ``null_all()`` at inference matches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sonodiff.conditioning.base import (
    Conditioner,
    ConditionerConfig,
    check_probability,
    draw_drop_mask,
    masked_mean,
)
from sonodiff.core.cond import Cond

__all__ = ["ROUTES", "ComposedConditioner", "ComposedConfig", "ComposedTokenizer"]

ROUTES = ("tokens", "pooled", "both")


@dataclass(frozen=True)
class ComposedConfig(ConditionerConfig):
    """``conditioners``: name -> component config dict (with its ``type``); ``how``: name -> route;
    ``token_dim`` / ``pooled_dim``: common widths (0 = the widest component)."""

    type = "composed"
    conditioners: dict = field(default_factory=dict)
    how: dict = field(default_factory=dict)
    pooled: Literal["concat", "sum"] = "concat"
    token_dim: int = 0
    pooled_dim: int = 0
    dropout: float = 0.0


def per_component(inputs, names) -> Any:
    """``{name: inputs}`` as given; a list of per-row ``{name: input}`` (one per example, as a collate_fn or
    ``DiffusionModel.cond`` has them) becomes ``{name: [input of each row]}``."""
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(r, Mapping) for r in inputs):
        bad = [sorted(r) for r in inputs if set(r) != set(names)]
        if bad:
            raise ValueError(f"every row of a composed conditioner's inputs needs the keys {sorted(names)}, got {bad[0]}")
        return {n: [r[n] for r in inputs] for n in names}
    return inputs


class ComposedTokenizer:
    """Picklable ``{name: inputs} -> {name: batch}`` (or a list of per-row ``{name: input}``)."""

    def __init__(self, tokenizers: Mapping[str, Any]) -> None:
        self.tokenizers = dict(tokenizers)

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
        inputs = per_component(inputs, self.tokenizers)
        if not isinstance(inputs, Mapping) or set(inputs) != set(self.tokenizers):
            given = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise ValueError(f"a composed conditioner tokenizes a mapping with keys {sorted(self.tokenizers)}, got {given}")
        return {name: tok(inputs[name]) for name, tok in self.tokenizers.items()}


class ComposedConditioner(Conditioner):
    name = "composed"
    config_cls = ComposedConfig

    def __init__(self, conditioners: Mapping[str, Conditioner], how: Mapping[str, str] | None = None, *,
                 pooled: str = "concat", token_dim: int = 0, pooled_dim: int = 0, dropout: float = 0.0) -> None:
        if not conditioners:
            raise ValueError("ComposedConditioner needs at least one conditioner")
        for n, c in conditioners.items():
            if not isinstance(c, Conditioner):
                raise ValueError(f"component {n!r} must be a Conditioner, got {type(c).__name__}")
        how = dict(how or {})
        unknown = sorted(set(how) - set(conditioners))
        if unknown:
            raise ValueError(f"how names {unknown} that are not components; components: {list(conditioners)}")
        for n, c in conditioners.items():
            if n not in how:
                how[n] = "both" if (c.token_dim and c.pooled_dim) else ("tokens" if c.token_dim else "pooled")
            if how[n] not in ROUTES:
                raise ValueError(f"how[{n!r}] must be one of {list(ROUTES)}, got {how[n]!r}")
        if pooled not in ("concat", "sum"):
            raise ValueError(f"pooled must be 'concat' or 'sum', got {pooled!r}")
        check_probability(dropout)
        config = ComposedConfig(
            conditioners={n: c.config.to_dict() for n, c in conditioners.items()},
            how={n: how[n] for n in conditioners}, pooled=pooled, token_dim=token_dim, pooled_dim=pooled_dim,
            dropout=dropout,
        )
        super().__init__(config)
        # frozen pretrained encoders (not trainable, and nothing to save: their config references the local
        # checkpoint) are kept outside the module tree, as DiffusionModel keeps a frozen conditioner, so their
        # weights never enter the optimizer, the EMA or a checkpoint; every other component is a submodule, so its
        # weights (trained, or a frozen random table) are saved and loaded with the model
        frozen = {n for n, c in conditioners.items() if not c.trainable and not c.weights()}
        self.components = nn.ModuleDict({n: c for n, c in conditioners.items() if n not in frozen})
        self.__dict__["_frozen"] = {n: c for n, c in conditioners.items() if n in frozen}
        self.__dict__["_order"] = list(conditioners)
        self.how = config.how

        tok = [n for n in conditioners if how[n] in ("tokens", "both")]
        pool = [n for n in conditioners if how[n] in ("pooled", "both")]
        tok_w = {n: conditioners[n].token_dim or conditioners[n].pooled_dim for n in tok}
        pool_w = {n: conditioners[n].pooled_dim or conditioners[n].token_dim for n in pool}
        self._token_dim = (token_dim or max(tok_w.values())) if tok else 0
        if pooled == "concat":
            if pooled_dim and pool and pooled_dim != sum(pool_w.values()):
                raise ValueError(f"pooled='concat' gives width {sum(pool_w.values())}; pooled_dim={pooled_dim} "
                                 "can only be used with pooled='sum' (or leave it 0)")
            self._pooled_dim = sum(pool_w.values())
        else:
            self._pooled_dim = (pooled_dim or max(pool_w.values())) if pool else 0
        self.token_proj = nn.ModuleDict(
            {n: nn.Linear(w, self._token_dim) for n, w in tok_w.items() if w != self._token_dim})
        self.pooled_proj = nn.ModuleDict(
            {n: nn.Linear(w, self._pooled_dim) for n, w in pool_w.items() if pooled == "sum" and w != self._pooled_dim})
        self.token_names, self.pooled_names = tok, pool

    @property
    def parts(self) -> dict[str, Conditioner]:
        """Every component, trainable or frozen, in composition order."""
        return {n: self.components[n] if n in self.components else self._frozen[n] for n in self._order}

    @property
    def device(self) -> torch.device:
        """The device of the first parameter or buffer, the frozen encoders' included (CPU if there is none)."""
        for c in (self, *self._frozen.values()):
            for t in (*c.parameters(), *c.buffers()):
                return t.device
        return torch.device("cpu")

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for c in self._frozen.values():  # .to() / .float() reach the frozen encoders too
            c._apply(fn)
        return self

    def __deepcopy__(self, memo):
        from sonodiff.utils.modules import deepcopy_sharing

        return deepcopy_sharing(self, memo, self._frozen.values())  # an EMA copy shares the frozen encoders

    @property
    def trainable(self) -> bool:
        return True  # the projections learn; components keep their own freezing

    @property
    def token_dim(self) -> int:
        return self._token_dim

    @property
    def pooled_dim(self) -> int:
        return self._pooled_dim

    def get_tokenizer(self) -> ComposedTokenizer:
        return ComposedTokenizer({n: c.get_tokenizer() for n, c in self.parts.items()})

    def tokenize(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
        inputs = per_component(inputs, self._order)
        if not isinstance(inputs, Mapping) or set(inputs) != set(self._order):
            given = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise ValueError(f"a composed conditioner tokenizes a mapping with keys {sorted(self._order)}, got {given}")
        return {n: c.tokenize(inputs[n]) for n, c in self.parts.items()}

    def weights(self) -> dict[str, Tensor]:
        out = {f"components.{n}.{k}": v for n, c in self.parts.items() for k, v in c.weights().items()}
        for k, v in self.state_dict().items():
            if k.startswith(("token_proj.", "pooled_proj.")):
                out[k] = v.detach()
        return out

    def forward(self, batch: Mapping[str, Mapping[str, Tensor]], *, drop: bool = False,
                generator: torch.Generator | None = None) -> Cond:
        """``{name: component batch}`` -> ``Cond(tokens [B, L, token_dim], mask [B, L], pooled [B, pooled_dim])``."""
        if set(batch) != set(self._order):
            raise ValueError(f"batch keys {sorted(batch)} != components {sorted(self._order)}")
        parts = {n: c(batch[n]) for n, c in self.parts.items()}
        sizes = {n: p.batch_size for n, p in parts.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"components disagree on the batch size: {sizes}")
        b = next(iter(sizes.values()))
        dev = self.device
        keep = {}
        for n, c in self.parts.items():
            p = c.config.dropout
            keep[n] = ~draw_drop_mask(b, p, generator, dev) if (drop and p > 0) else None

        tokens, masks = [], []
        for n in self.token_names:
            t, m = self._as_tokens(parts[n])
            if n in self.token_proj:
                t = self.token_proj[n](t)
            if keep[n] is not None:
                m = m & keep[n][:, None]
                t = t * m.unsqueeze(-1).to(t.dtype)
            tokens.append(t)
            masks.append(m)
        pooled = []
        for n in self.pooled_names:
            v = self._as_pooled(parts[n])
            if n in self.pooled_proj:
                v = self.pooled_proj[n](v)
            if keep[n] is not None:
                v = v * keep[n][:, None].to(v.dtype)
            pooled.append(v)
        cond = Cond(
            tokens=torch.cat(tokens, dim=1) if tokens else None,
            mask=torch.cat(masks, dim=1) if masks else None,
            pooled=(torch.cat(pooled, dim=1) if self.config.pooled == "concat" else torch.stack(pooled).sum(0))
            if pooled else None,
        )
        if drop and self.config.dropout > 0:
            cond = cond.with_null(draw_drop_mask(b, self.config.dropout, generator, dev))
        return cond

    @staticmethod
    def _as_tokens(c: Cond) -> tuple[Tensor, Tensor]:
        if c.tokens is not None:
            mask = c.mask if c.mask is not None else torch.ones(c.tokens.shape[:2], dtype=torch.bool,
                                                                 device=c.tokens.device)
            return c.tokens, mask
        v = c.pooled.unsqueeze(1)
        return v, torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)

    @staticmethod
    def _as_pooled(c: Cond) -> Tensor:
        if c.pooled is not None:
            return c.pooled
        mask = c.mask if c.mask is not None else torch.ones(c.tokens.shape[:2], dtype=torch.bool, device=c.tokens.device)
        return masked_mean(c.tokens, mask).to(c.tokens.dtype)
