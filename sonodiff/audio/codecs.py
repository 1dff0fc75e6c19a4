"""Codecs (modality adapters): data <-> the space the diffusion model works in.

Every codec has the same interface::

    analyze(data)   -> features   deterministic and statistics-free (what the feature cache stores)
    normalize(f)    -> z          uses fitted statistics (cheap; applied when loading from a cache)
    encode(data)    -> z          = normalize(analyze(data))
    decode(z)       -> data or features for a vocoder
    stat_terms(f)   -> dict of additive float64 sums;  fit_terms(sum of those) fits the statistics
    save(dir) / Codec.load(dir) / load_codec(dir)    config.json + stats.safetensors

Registered codecs (:data:`CODECS`):

- ``waveform``: audio ``[B, C, T]`` -> ``z = audio * scale`` ``[B, C, T]``. ``scale`` is 1 unless
  ``target_std`` is set, in which case ``scale = target_std / std(data)`` is fitted on the data set
  (e.g. ``target_std=0.5`` to match EDM's sigma_data = 0.5, Karras et al. 2022).
- ``mel``: audio ``[B, C, T]`` -> log-mel ``[B, C, n_mels, frames]`` normalised per mel bin with a
  mean and std fitted on the data set; ``decode`` returns the (de-normalised) log-mel, which a vocoder
  (:mod:`sonodiff.audio.vocoder`) turns back into audio.
- ``image``: uint8 images ``[B, C, H, W]`` -> float32 in ``[-1, 1]``; ``decode`` rounds back to uint8.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sonodiff.audio.features import MelConfig, log_mel, mel_filterbank
from sonodiff.audio.io import write_json_atomic

__all__ = [
    "CODECS",
    "Codec",
    "ImageCodec",
    "ImageCodecConfig",
    "MelCodec",
    "MelCodecConfig",
    "WaveformCodec",
    "WaveformCodecConfig",
    "config_from_dict",
    "load_codec",
    "make_codec",
]

CONFIG_FILE = "config.json"
STATS_FILE = "stats.safetensors"


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build the frozen dataclass ``cls`` from ``values``; unknown keys and wrong types raise."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {names}")
    out = {}
    for k, v in values.items():
        hint = hints[k]
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
        if typing.get_origin(hint) is typing.Literal:
            allowed = (str,)
        ok = False
        for t in allowed:
            if t is type(None) and v is None:
                ok = True
            elif t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
                v, ok = float(v), True
            elif t in (int, str, bool) and type(v) is t or typing.get_origin(t) is typing.Literal and isinstance(v, str):
                ok = True
            if ok:
                break
        if not ok:
            raise ValueError(f"{cls.__name__}.{k} must be {hint}, got {v!r} ({type(v).__name__})")
        out[k] = v
    return cls(**out)


class Codec(nn.Module):
    """Base class; see the module docstring for the contract. Statistics are float64 buffers."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, config) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config = config

    # --- interface -----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int | None:
        return getattr(self.config, "sample_rate", None)

    @property
    def channels(self) -> int:
        return self.config.channels

    def analyze(self, data: Tensor) -> Tensor:
        raise NotImplementedError

    def normalize(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def denormalize(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, data: Tensor) -> Tensor:
        return self.normalize(self.analyze(data))

    def decode(self, z: Tensor) -> Tensor:
        return self.denormalize(z)

    def stat_terms(self, features: Tensor) -> dict[str, Tensor]:
        return {}

    def fit_terms(self, terms: dict[str, Tensor]) -> None:
        if terms:
            raise ValueError(f"codec {self.name!r} has no statistics to fit")

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, features: Iterable[Tensor]) -> Codec:
        """Fit statistics from an iterable of :meth:`analyze` outputs; returns ``self``."""
        total: dict[str, Tensor] = {}
        for f in features:
            for k, v in self.stat_terms(f).items():
                total[k] = total[k] + v if k in total else v.clone()
        if not total and self.stats():
            raise ValueError("fit() got no features")
        self.fit_terms(total)
        return self

    def _check_channels(self, data: Tensor, ndim: int, layout: str) -> None:
        if data.ndim != ndim or data.shape[1] != self.config.channels:
            raise ValueError(f"{self.name} codec expects {layout} with C={self.config.channels}, got shape "
                             f"{tuple(data.shape)}; apply a channel policy / reshape first")

    # --- persistence ---------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"codec": self.name, "config": asdict(self.config)}

    def config_hash(self) -> str:
        """Hash of the codec name and config (not its statistics): keys cached features."""
        blob = json.dumps(self.config_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def stats(self) -> dict[str, Tensor]:
        return dict(self.named_buffers())

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and (if the codec has statistics) ``stats.safetensors`` to ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        stats = {k: v.detach().cpu().contiguous() for k, v in self.stats().items()}
        if stats:
            tmp = d / f".{STATS_FILE}.{os.getpid()}.tmp"
            save_file(stats, str(tmp))
            os.replace(tmp, d / STATS_FILE)
        write_json_atomic(d / CONFIG_FILE, {**self.config_dict(), "fitted": self.is_fitted})
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Codec:
        d = Path(directory)
        meta = json.loads((d / CONFIG_FILE).read_text())
        if meta.get("codec") != cls.name:
            raise ValueError(f"{d / CONFIG_FILE} holds codec {meta.get('codec')!r}, not {cls.name!r}; "
                             "use load_codec()")
        codec = cls(config_from_dict(cls.config_cls, meta["config"]))
        if (d / STATS_FILE).exists():
            from safetensors.torch import load_file

            stats = load_file(str(d / STATS_FILE))
            own = codec.stats()
            if set(stats) != set(own):
                raise ValueError(f"{d / STATS_FILE} has tensors {sorted(stats)}, expected {sorted(own)}")
            for k, v in stats.items():
                own[k].copy_(v)
        return codec


# --- waveform ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaveformCodecConfig:
    """sample_rate Hz; channels C; target_std: None for ``z = audio``, else fit ``scale = target_std / std``."""

    sample_rate: int = 16000
    channels: int = 1
    target_std: float | None = None


class WaveformCodec(Codec):
    """Audio ``[B, C, T]`` <-> ``z = scale * audio`` ``[B, C, T]`` (see module docstring)."""

    name = "waveform"
    config_cls = WaveformCodecConfig

    def __init__(self, config: WaveformCodecConfig = WaveformCodecConfig()) -> None:
        super().__init__(config)
        self.register_buffer("data_std", torch.full((), float("nan"), dtype=torch.float64))

    @property
    def is_fitted(self) -> bool:
        return self.config.target_std is None or bool(torch.isfinite(self.data_std))

    @property
    def scale(self) -> float:
        if self.config.target_std is None:
            return 1.0
        if not self.is_fitted:
            raise ValueError("waveform codec with target_std is not fitted; call fit() or load a fitted codec")
        return self.config.target_std / float(self.data_std)

    def analyze(self, data: Tensor) -> Tensor:
        self._check_channels(data, 3, "audio [B, C, T]")
        return data

    def normalize(self, features: Tensor) -> Tensor:
        return features * self.scale

    def denormalize(self, z: Tensor) -> Tensor:
        return z / self.scale

    def stat_terms(self, features: Tensor) -> dict[str, Tensor]:
        f = features.detach().double()
        return {"n": torch.tensor(float(f.numel()), dtype=torch.float64), "s1": f.sum(), "s2": f.pow(2).sum()}

    def fit_terms(self, terms: dict[str, Tensor]) -> None:
        n = terms["n"]
        var = terms["s2"] / n - (terms["s1"] / n) ** 2
        if not var > 0 and self.config.target_std is not None:
            raise ValueError(f"cannot fit waveform scale: data variance is {float(var)} (silent data?)")
        self.data_std.copy_(var.clamp_min(0).sqrt())  # recorded even when unused (target_std=None)


# --- mel ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MelCodecConfig(MelConfig):
    """:class:`MelConfig` plus channels C and ``min_std``: per-bin stds are floored at this (log units)
    so a bin that is nearly constant over the data set (e.g. above the Nyquist of upsampled audio)
    is not amplified into noise."""

    channels: int = 1
    min_std: float = 0.05


class MelCodec(Codec):
    """Audio ``[B, C, T]`` -> normalised log-mel ``[B, C, n_mels, frames]``; decode -> log-mel."""

    name = "mel"
    config_cls = MelCodecConfig

    def __init__(self, config: MelCodecConfig = MelCodecConfig()) -> None:
        super().__init__(config)
        self.register_buffer("mean", torch.full((config.n_mels,), float("nan"), dtype=torch.float64))
        self.register_buffer("std", torch.full((config.n_mels,), float("nan"), dtype=torch.float64))
        self._fb: Tensor | None = None

    def filterbank(self, ref: Tensor) -> Tensor:
        """The mel filterbank ``[n_freqs, n_mels]`` on ``ref``'s device and dtype (built once, lazily)."""
        if self._fb is None:
            self._fb = mel_filterbank(self.config)
        if self._fb.device != ref.device or self._fb.dtype != ref.dtype:
            self._fb = self._fb.to(ref.device, ref.dtype)
        return self._fb

    def stats(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std}

    @property
    def is_fitted(self) -> bool:
        return bool(torch.isfinite(self.mean).all() and torch.isfinite(self.std).all())

    def analyze(self, data: Tensor) -> Tensor:
        """Audio ``[B, C, T]`` -> log-mel ``[B, C, n_mels, frames]`` (natural log, floored)."""
        self._check_channels(data, 3, "audio [B, C, T]")
        return log_mel(data, self.config, self.filterbank(data))

    def _ms(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        if not self.is_fitted:
            raise ValueError("mel codec is not fitted; call fit()/fit_terms() or load a fitted codec")
        mean = self.mean.to(ref.device, ref.dtype)[:, None]
        std = self.std.clamp_min(self.config.min_std).to(ref.device, ref.dtype)[:, None]
        return mean, std

    def normalize(self, features: Tensor) -> Tensor:
        mean, std = self._ms(features)
        return (features - mean) / std

    def denormalize(self, z: Tensor) -> Tensor:
        mean, std = self._ms(z)
        return z * std + mean

    def stat_terms(self, features: Tensor) -> dict[str, Tensor]:
        """Per-bin sums over every axis but the mel axis (-2) of ``[..., n_mels, frames]``."""
        f = features.detach().double().transpose(-1, -2).reshape(-1, self.config.n_mels)
        return {"n": torch.tensor(float(f.shape[0]), dtype=torch.float64), "s1": f.sum(0), "s2": f.pow(2).sum(0)}

    def fit_terms(self, terms: dict[str, Tensor]) -> None:
        n = terms["n"]
        if not n > 1:
            raise ValueError(f"cannot fit mel statistics from {float(n)} frames")
        mean = terms["s1"] / n
        var = (terms["s2"] / n - mean.pow(2)).clamp_min(0.0)
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt())


# --- image -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageCodecConfig:
    channels: int = 1


class ImageCodec(Codec):
    """uint8 images ``[B, C, H, W]`` <-> float32 ``z = x / 127.5 - 1`` in ``[-1, 1]``."""

    name = "image"
    config_cls = ImageCodecConfig

    def __init__(self, config: ImageCodecConfig = ImageCodecConfig()) -> None:
        super().__init__(config)

    def analyze(self, data: Tensor) -> Tensor:
        self._check_channels(data, 4, "uint8 images [B, C, H, W]")
        if data.dtype != torch.uint8:
            raise ValueError(f"image codec expects dtype uint8, got {data.dtype}")
        return data.float()

    def normalize(self, features: Tensor) -> Tensor:
        return features / 127.5 - 1.0

    def denormalize(self, z: Tensor) -> Tensor:
        return (z + 1.0) * 127.5

    def decode(self, z: Tensor) -> Tensor:
        """``z [B, C, H, W]`` -> uint8; values outside ``[-1, 1]`` (model overshoot) saturate at 0 / 255."""
        return self.denormalize(z).round().clamp(0, 255).to(torch.uint8)


CODECS: dict[str, type[Codec]] = {"waveform": WaveformCodec, "mel": MelCodec, "image": ImageCodec}


def make_codec(name: str, **config: Any) -> Codec:
    """Build a registered codec by name with config fields as keyword arguments."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid: {sorted(CODECS)}")
    cls = CODECS[name]
    return cls(config_from_dict(cls.config_cls, config))


def load_codec(directory: str | os.PathLike) -> Codec:
    """Load whichever registered codec ``directory/config.json`` names."""
    meta = json.loads((Path(directory) / CONFIG_FILE).read_text())
    name = meta.get("codec")
    if name not in CODECS:
        raise ValueError(f"{directory}: unknown codec {name!r}; valid: {sorted(CODECS)}")
    return CODECS[name].load(directory)
