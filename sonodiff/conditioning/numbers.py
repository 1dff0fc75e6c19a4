"""Numbers and timing: a scalar in a known range -> Fourier features -> MLP.

A value ``x`` in ``[min_value, max_value]`` is normalised to ``u = (x - min) / (max - min)`` in ``[0, 1]`` and
embedded as ``[u, cos(pi 2^k u), sin(pi 2^k u)]_{k < num_freqs}`` (Fourier features, Tancik et al., "Fourier
Features Let Networks Learn High Frequency Functions", 2020), then a two-layer SiLU MLP to ``dim``.

Timing conditioning is Stable Audio's (Evans et al., "Fast Timing-Conditioned Latent Audio Diffusion", 2024):
``seconds_start`` (where the training crop starts in its file) and ``seconds_total`` (the file's duration), each
embedded by its own number embedder. It gives both routes: ``tokens [B, 2, dim]`` (one token per quantity, for
cross-attention) and ``pooled [B, 2 dim]`` (the two embeddings concatenated, the global conditioning of Stable
Audio). At inference ``seconds_start=0`` and ``seconds_total=`` the requested duration.

Values outside the configured range raise (nothing is clamped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sonodiff.conditioning.base import Conditioner, ConditionerConfig
from sonodiff.core.cond import Cond

__all__ = [
    "NumberConditioner",
    "NumberConfig",
    "NumberEmbedder",
    "TimingConditioner",
    "TimingConfig",
    "number_features",
]


def number_features(u: Tensor, num_freqs: int) -> Tensor:
    """``u [B]`` (normalised, float) -> ``[B, 2 num_freqs + 1]`` = ``[u, cos(pi 2^k u), sin(pi 2^k u)]``, float32."""
    w = math.pi * 2.0 ** torch.arange(num_freqs, device=u.device, dtype=torch.float32)
    arg = u.float()[:, None] * w[None, :]
    return torch.cat([u.float()[:, None], arg.cos(), arg.sin()], dim=1)


class NumberEmbedder(nn.Module):
    """``x [B]`` in ``[lo, hi]`` -> ``[B, dim]``."""

    def __init__(self, lo: float, hi: float, dim: int, num_freqs: int) -> None:
        super().__init__()
        if not hi > lo:
            raise ValueError(f"the value range needs max > min, got min={lo}, max={hi}")
        self.lo, self.hi, self.num_freqs = lo, hi, num_freqs
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def check(self, x: Tensor, what: str) -> None:
        if x.ndim != 1 or not x.is_floating_point():
            raise ValueError(f"{what} must be a [B] float tensor, got {x.dtype} {tuple(x.shape)}")
        bad = ~torch.isfinite(x) | (x < self.lo) | (x > self.hi)
        if bool(bad.any()):
            raise ValueError(f"{what} must lie in [{self.lo}, {self.hi}] (the configured range), got "
                             f"{x[bad].tolist()}; widen the range in the config")

    def forward(self, x: Tensor) -> Tensor:
        u = (x.float() - self.lo) / (self.hi - self.lo)
        feats = number_features(u, self.num_freqs).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


@dataclass(frozen=True)
class NumberConfig(ConditionerConfig):
    type = "number"
    min_value: float = 0.0
    max_value: float = 1.0
    dim: int = 256
    num_freqs: int = 8
    trainable: bool = True
    dropout: float = 0.0


class NumberTokenizer:
    """Picklable ``list[float] -> {key: [B] float32}`` with a range check."""

    def __init__(self, keys: tuple[str, ...], lo: float, hi: float) -> None:
        self.keys, self.lo, self.hi = keys, lo, hi

    def values(self, xs, key: str) -> Tensor:
        for x in xs:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"{key} must be finite numbers, got {x!r}")
            if not self.lo <= x <= self.hi:
                raise ValueError(f"{key}={x} outside the configured range [{self.lo}, {self.hi}]")
        return torch.tensor([float(x) for x in xs], dtype=torch.float32)

    def __call__(self, inputs: Sequence) -> dict[str, Tensor]:
        if isinstance(inputs, (int, float, str, Mapping)) or len(inputs) == 0:
            raise ValueError(f"tokenize a non-empty list, got {inputs!r}")
        if len(self.keys) == 1:
            return {self.keys[0]: self.values(list(inputs), self.keys[0])}
        out = {}
        for key in self.keys:
            if not all(isinstance(x, Mapping) and key in x for x in inputs):
                raise ValueError(f"each input must be a mapping with keys {list(self.keys)}, got {list(inputs)!r}")
            out[key] = self.values([x[key] for x in inputs], key)
        return out


class NumberConditioner(Conditioner):
    """``{"values": [B] float32}`` -> ``Cond(pooled [B, dim])``."""

    name = "number"
    config_cls = NumberConfig

    def __init__(self, config: NumberConfig | None = None) -> None:
        super().__init__(config if config is not None else NumberConfig())
        c = self.config
        self.embed = NumberEmbedder(c.min_value, c.max_value, c.dim, c.num_freqs)
        self._apply_freezing()

    @property
    def pooled_dim(self) -> int:
        return self.config.dim

    def get_tokenizer(self) -> NumberTokenizer:
        return NumberTokenizer(("values",), self.config.min_value, self.config.max_value)

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        x = batch["values"].to(self.device)
        self.embed.check(x, "values")
        return Cond(pooled=self.embed(x))


@dataclass(frozen=True)
class TimingConfig(ConditionerConfig):
    """``max_seconds``: the range of both quantities is ``[0, max_seconds]`` (Stable Audio: 512)."""

    type = "timing"
    max_seconds: float = 512.0
    dim: int = 256
    num_freqs: int = 8
    trainable: bool = True
    dropout: float = 0.0


class TimingConditioner(Conditioner):
    """``{"seconds_start": [B], "seconds_total": [B]}`` (seconds) -> ``Cond(tokens [B, 2, dim], mask [B, 2],
    pooled [B, 2 dim])``. ``tokenize`` takes a list of ``{"seconds_start": s, "seconds_total": t}``."""

    name = "timing"
    config_cls = TimingConfig
    keys = ("seconds_start", "seconds_total")

    def __init__(self, config: TimingConfig | None = None) -> None:
        super().__init__(config if config is not None else TimingConfig())
        c = self.config
        self.start = NumberEmbedder(0.0, c.max_seconds, c.dim, c.num_freqs)
        self.total = NumberEmbedder(0.0, c.max_seconds, c.dim, c.num_freqs)
        self._apply_freezing()

    @property
    def token_dim(self) -> int:
        return self.config.dim

    @property
    def pooled_dim(self) -> int:
        return 2 * self.config.dim

    def get_tokenizer(self) -> NumberTokenizer:
        return NumberTokenizer(self.keys, 0.0, self.config.max_seconds)

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        s, t = batch["seconds_start"].to(self.device), batch["seconds_total"].to(self.device)
        self.start.check(s, "seconds_start")
        self.total.check(t, "seconds_total")
        es, et = self.start(s), self.total(t)
        tokens = torch.stack([es, et], dim=1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Cond(tokens=tokens, mask=mask, pooled=torch.cat([es, et], dim=1))
