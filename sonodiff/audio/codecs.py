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
- ``latent``: audio -> a learned autoencoder's latent (:class:`LatentCodec`): the autoencoder's mel codec, then its
  encoder's posterior mean ``[B, L, n_mels / f, frames / f]``, normalised per latent channel with a mean and std
  fitted on the data set (unit variance); ``decode`` runs the decoder and returns the log-mel, voiced by a vocoder
  like a mel codec's. A codec with weights: its cache key includes the weights' hash.

``mel_config`` is the :class:`MelConfig` of the log-mel a codec decodes to (mel and latent codecs; None for
the others, which decode to their data); ``hop_samples`` is the number of audio samples per step of the last
feature axis (None for images).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sonodiff.audio.features import MelConfig, log_mel, mel_filterbank
from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json
from sonodiff.utils.config import from_dict

__all__ = [
    "active_mask",
    "CODECS",
    "Codec",
    "ImageCodec",
    "ImageCodecConfig",
    "LatentCodec",
    "LatentCodecConfig",
    "load_autoencoder_dir",
    "save_autoencoder_dir",
    "MelCodec",
    "MelCodecConfig",
    "WaveformCodec",
    "WaveformCodecConfig",
    "load_codec",
    "make_codec",
]

CONFIG_FILE = "config.json"
STATS_FILE = "stats.safetensors"

# Which parts of an item the statistics are fitted on (silence and padding are left out).
ACTIVE_FLOOR_DB = 40.0  # a frame/block must be at least this far above the floor (mel: log_floor; waveform: -100 dBFS)
ACTIVE_RANGE_DB = 60.0  # ... and within this range of the item's loudest frame/block
ACTIVE_BLOCK_S = 0.02  # waveform: blocks of 20 ms
WAVEFORM_FLOOR_DBFS = -100.0


def active_mask(level_db: Tensor, floor_db: float = ACTIVE_FLOOR_DB, range_db: float = ACTIVE_RANGE_DB) -> Tensor:
    """``[N]`` bool: which frames of ``level_db [N]`` (a level per frame, in dB above the representable floor)
    are active: at least ``floor_db`` above the floor and within ``range_db`` of the loudest frame."""
    if level_db.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=level_db.device)
    return (level_db >= floor_db) & (level_db >= level_db.max() - range_db)


class Codec(nn.Module):
    """Base class; see the module docstring for the contract. Statistics are float64 buffers."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    modality: ClassVar[str] = "audio"  # what the codec's data is: "audio" ([B, C, T] waveforms) or "image"

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

    @property
    def mel_config(self) -> MelConfig | None:
        """The mel settings of the log-mel :meth:`decode` returns (voiced by a vocoder), or None when the codec
        decodes to its data itself (waveform, image)."""
        return None

    @property
    def hop_samples(self) -> int | None:
        """Audio samples per step of the features' last axis (None for image codecs)."""
        return 1 if self.modality == "audio" else None

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
        if data.ndim != ndim or data.shape[1] != self.channels:
            raise ValueError(f"{self.name} codec expects {layout} with C={self.channels}, got shape "
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
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.stats():
            atomic_save_tensors(d / STATS_FILE, self.stats())
        atomic_write_json(d / CONFIG_FILE, {**self.config_dict(), "fitted": self.is_fitted}, indent=1, sort_keys=True)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Codec:
        d = Path(directory)
        meta = json.loads((d / CONFIG_FILE).read_text())
        if meta.get("codec") != cls.name:
            raise ValueError(f"{d / CONFIG_FILE} holds codec {meta.get('codec')!r}, not {cls.name!r}; "
                             "use load_codec()")
        codec = cls(from_dict(cls.config_cls, meta["config"], cls.config_cls.__name__))
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
        """Sums over the samples of the active blocks of ``[..., T]`` (see :func:`active_mask`): silence and
        padding do not lower the fitted scale, so a unit of normalised signal means the same loudness in
        every data set."""
        f = features.detach().double()
        T = f.shape[-1]
        B = max(1, int(round(ACTIVE_BLOCK_S * self.sample_rate)))
        nb = -(-T // B)
        blocks = torch.nn.functional.pad(f, (0, nb * B - T)).reshape(*f.shape[:-1], nb, B)
        power = blocks.pow(2).mean(dim=-1).reshape(-1, nb).mean(0)  # [nb], channels pooled
        keep = active_mask(10 * torch.log10(power.clamp_min(1e-30)) - WAVEFORM_FLOOR_DBFS, ACTIVE_FLOOR_DB, ACTIVE_RANGE_DB)
        sel = f[..., keep.repeat_interleave(B)[:T]]  # the samples of active blocks (not the block padding)
        n = torch.tensor(float(sel.numel()), dtype=torch.float64)
        return {"n": n, "s1": sel.sum(), "s2": sel.pow(2).sum()}

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
    def mel_config(self) -> MelCodecConfig:
        return self.config

    @property
    def hop_samples(self) -> int:
        return self.config.hop_length

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
        """Per-bin sums over the active frames of ``[..., n_mels, frames]`` (every axis but the mel axis -2).

        A frame is active when its loudest bin is at least ``ACTIVE_FLOOR_DB`` above the log floor and within
        ``ACTIVE_RANGE_DB`` of the item's loudest frame (:func:`active_mask`): digital silence, padding and
        near-silent tails do not pull the per-bin means down, so a unit of normalised feature means the same
        loudness in every data set (fitted on silence-padded clips, the means sit near the floor and one unit
        at the top of the range is tens of times louder in amplitude).
        """
        f = features.detach().double()
        frames = f.shape[-1]
        f = f.reshape(-1, self.config.n_mels, frames)  # [C*..., n_mels, frames]
        peak_db = f.amax(dim=(0, 1)) * (20.0 / (self.config.power * math.log(10)))  # [frames], dB (amplitude)
        floor_db = math.log(self.config.log_floor) * 20.0 / (self.config.power * math.log(10))
        keep = active_mask(peak_db - floor_db, ACTIVE_FLOOR_DB, ACTIVE_RANGE_DB)
        sel = f[..., keep].transpose(-1, -2).reshape(-1, self.config.n_mels)
        return {"n": torch.tensor(float(sel.shape[0]), dtype=torch.float64), "s1": sel.sum(0), "s2": sel.pow(2).sum(0)}

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
    channels: int = 1  # 1 (greyscale) or 3 (RGB)
    height: int = 0  # the image size the model is trained on and generates; 0 = not fixed (analysis only)
    width: int = 0

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"image codec channels must be 1 (greyscale) or 3 (RGB), got {self.channels}")
        if self.height < 0 or self.width < 0 or (self.height == 0) != (self.width == 0):
            raise ValueError(f"image codec height and width must both be > 0 (a fixed size) or both 0, got "
                             f"{self.height}x{self.width}")


class ImageCodec(Codec):
    """uint8 images ``[B, C, H, W]`` <-> float32 ``z = x / 127.5 - 1`` in ``[-1, 1]``."""

    name = "image"
    modality = "image"
    config_cls = ImageCodecConfig

    def __init__(self, config: ImageCodecConfig = ImageCodecConfig()) -> None:
        super().__init__(config)

    @property
    def size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images this codec's model takes, or None when not fixed."""
        return (self.config.height, self.config.width) if self.config.height else None

    def analyze(self, data: Tensor) -> Tensor:
        self._check_channels(data, 4, "uint8 images [B, C, H, W]")
        if data.dtype != torch.uint8:
            raise ValueError(f"image codec expects dtype uint8, got {data.dtype}")
        if self.size is not None and tuple(data.shape[-2:]) != self.size:
            raise ValueError(f"image codec takes {self.size[0]}x{self.size[1]} images, got "
                             f"{data.shape[-2]}x{data.shape[-1]}")
        return data.float()

    def normalize(self, features: Tensor) -> Tensor:
        return features / 127.5 - 1.0

    def denormalize(self, z: Tensor) -> Tensor:
        return (z + 1.0) * 127.5

    def decode(self, z: Tensor) -> Tensor:
        """``z [B, C, H, W]`` -> uint8; values outside ``[-1, 1]`` (model overshoot) saturate at 0 / 255."""
        return self.denormalize(z).round().clamp(0, 255).to(torch.uint8)


# --- latent ------------------------------------------------------------------------------------
AUTOENCODER_KIND = "autoencoder"


@dataclass(frozen=True)
class LatentCodecConfig:
    """``autoencoder``: a shipped autoencoder name (a folder of ``sonodiff/models``) or an autoencoder model
    directory (``sonodiff export`` of a ``task = "autoencoder"`` run)."""

    autoencoder: str = ""


def resolve_autoencoder(spec: str) -> Path:
    """The autoencoder model directory ``spec`` names (a path, or a shipped name); a clear error otherwise."""
    models = Path(__file__).resolve().parent.parent / "models"
    for cand in (Path(spec), models / spec):
        if (cand / CONFIG_FILE).is_file():
            return cand
    shipped = sorted(d.name for d in models.iterdir() if (d / CONFIG_FILE).is_file()
                     and json.loads((d / CONFIG_FILE).read_text()).get("kind") == AUTOENCODER_KIND) \
        if models.is_dir() else []
    raise FileNotFoundError(f"autoencoder {spec!r} is neither an autoencoder model directory nor a shipped "
                            f"autoencoder ({shipped or 'none shipped'})")


def save_autoencoder_dir(out: str | os.PathLike, *, config: dict, state: dict, mel: "MelCodec", source: dict) -> Path:
    """Write an autoencoder model directory: config.json (kind "autoencoder", the network config, source, weights
    hash), model.safetensors and codec/ (the fitted mel codec it was trained on). Files are written atomically."""
    from sonodiff import __version__
    from sonodiff.nn.autoencoder import MelAutoencoderConfig
    from sonodiff.utils.atomic import atomic_save_tensors as save_tensors

    MelAutoencoderConfig.from_dict(config)  # a bad config fails before anything is written
    if not mel.is_fitted:
        raise ValueError("save_autoencoder_dir needs the fitted mel codec the autoencoder was trained on")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    save_tensors(d / "model.safetensors", {k: v.contiguous() for k, v in state.items()})
    mel.save(d / "codec")
    h = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()[:16]
    atomic_write_json(d / CONFIG_FILE, {"format": "sonodiff-model", "format_version": 1, "sonodiff_version": __version__,
                                        "kind": AUTOENCODER_KIND, "autoencoder": "mel_vae", "config": config,
                                        "source": source, "weights_sha256_16": h}, indent=1)
    return d


def load_autoencoder_dir(directory: str | os.PathLike):
    """(MelAutoencoder in eval mode, its fitted MelCodec, config.json dict) of an autoencoder model directory."""
    from sonodiff.nn.autoencoder import MelAutoencoder, MelAutoencoderConfig
    from sonodiff.utils.modules import load_weights

    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path} is missing or not valid JSON ({e})") from None
    if meta.get("kind") != AUTOENCODER_KIND:
        raise ValueError(f"{d} is not an autoencoder model directory ({cfg_path} has kind "
                         f"{meta.get('kind', 'diffusion')!r}, not {AUTOENCODER_KIND!r})")
    net = MelAutoencoder(MelAutoencoderConfig.from_dict(meta["config"], f"{cfg_path}: config"))
    load_weights(net, d / "model.safetensors", f"the network in {cfg_path}")
    mel = load_codec(d / "codec")
    if not isinstance(mel, MelCodec) or not mel.is_fitted:
        raise ValueError(f"{d / 'codec'} must hold the fitted mel codec the autoencoder was trained on")
    if mel.config.n_mels != net.config.n_mels or mel.channels != net.config.in_channels:
        raise ValueError(f"{d}: the autoencoder takes {net.config.in_channels} x {net.config.n_mels} mels, its codec "
                         f"gives {mel.channels} x {mel.config.n_mels}")
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), mel, meta


class LatentCodec(Codec):
    """Audio ``[B, C, T]`` -> a learned autoencoder's normalised latent ``[B, L, n_mels / f, frames' / f]``.

    ``analyze``: the autoencoder's mel codec (its own fitted statistics), the mel frames padded with silence to a
    multiple of ``f``, then the encoder's posterior mean (deterministic). ``normalize``: per latent channel, with a
    mean and std fitted on the data set's active latents (the cache's train split), so the diffusion model sees
    unit variance. ``decode``: the decoder, then the mel codec's de-normalisation: natural-log mel for a vocoder.
    The weights are frozen; ``config_dict`` carries their hash, so feature caches of another autoencoder (or of a
    retrained one) are other folders. ``save`` copies the autoencoder into the codec folder (self-contained
    model directories); ``load`` checks that copy against the recorded hash.
    """

    name = "latent"
    config_cls = LatentCodecConfig

    def __init__(self, config: LatentCodecConfig = LatentCodecConfig(), _directory: Path | None = None) -> None:
        super().__init__(config)
        if not config.autoencoder and _directory is None:
            raise ValueError("the latent codec needs codec.options.autoencoder: a shipped autoencoder name or an "
                             "autoencoder model directory (sonodiff export of a task = \"autoencoder\" run)")
        d = _directory if _directory is not None else resolve_autoencoder(config.autoencoder)
        net, mel, meta = load_autoencoder_dir(d)
        self.directory = Path(d)
        self.__dict__["net"] = net  # frozen and not a submodule: the codec's state is its statistics only
        self.__dict__["mel"] = mel
        self.weights_sha = str(meta.get("weights_sha256_16", ""))
        L = net.config.latent_channels
        self.register_buffer("mean", torch.full((L,), float("nan"), dtype=torch.float64))
        self.register_buffer("std", torch.full((L,), float("nan"), dtype=torch.float64))
        with torch.no_grad():
            self._silence = mel.normalize(mel.analyze(torch.zeros(1, mel.channels, mel.config.n_fft)))[..., :1].float()

    # --- properties -----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def channels(self) -> int:
        return self.mel.channels

    @property
    def latent_channels(self) -> int:
        return self.net.config.latent_channels

    @property
    def factor(self) -> int:
        return self.net.factor

    @property
    def mel_config(self) -> MelCodecConfig:
        return self.mel.config

    @property
    def hop_samples(self) -> int:
        return self.mel.config.hop_length * self.factor

    def stats(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std}

    @property
    def is_fitted(self) -> bool:
        return bool(torch.isfinite(self.mean).all() and torch.isfinite(self.std).all())

    def config_dict(self) -> dict[str, Any]:
        return {"codec": self.name, "config": asdict(self.config), "autoencoder_sha256_16": self.weights_sha}

    # --- the interface --------------------------------------------------------------------------
    @torch.no_grad()
    def analyze(self, data: Tensor) -> Tensor:
        self._check_channels(data, 3, "audio [B, C, T]")
        x = self.mel.encode(data.float())  # [B, C, n_mels, frames]
        pad = -x.shape[-1] % self.factor
        if pad:
            x = torch.cat([x, self._silence.to(x).expand(*x.shape[:-1], pad)], dim=-1)
        net = self.net.to(x.device)
        return net.encode(x)[0].float()

    def _ms(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        if not self.is_fitted:
            raise ValueError("latent codec is not fitted; call fit()/fit_terms() or load a fitted codec")
        return (self.mean.to(ref.device, ref.dtype)[:, None, None],
                self.std.clamp_min(1e-3).to(ref.device, ref.dtype)[:, None, None])

    def normalize(self, features: Tensor) -> Tensor:
        mean, std = self._ms(features)
        return (features - mean) / std

    def denormalize(self, z: Tensor) -> Tensor:
        mean, std = self._ms(z)
        return z * std + mean

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Normalised latent ``[B, L, F', T']`` -> natural-log mel ``[B, C, n_mels, T' * f]`` (float32)."""
        net = self.net.to(z.device)
        return self.mel.denormalize(net.decode(self.denormalize(z.float())).float())

    def stat_terms(self, features: Tensor) -> dict[str, Tensor]:
        """Per-latent-channel sums over every position of ``[..., L, F', T']`` (channel axis -3)."""
        f = features.detach().double().movedim(-3, -1).reshape(-1, self.latent_channels)
        return {"n": torch.tensor(float(f.shape[0]), dtype=torch.float64), "s1": f.sum(0), "s2": f.pow(2).sum(0)}

    def fit_terms(self, terms: dict[str, Tensor]) -> None:
        n = terms["n"]
        if not n > 1:
            raise ValueError(f"cannot fit latent statistics from {float(n)} positions")
        mean = terms["s1"] / n
        self.mean.copy_(mean)
        self.std.copy_((terms["s2"] / n - mean.pow(2)).clamp_min(0.0).sqrt())

    # --- persistence: the autoencoder travels with the codec ------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        import shutil

        d = super().save(directory)
        target = d / "autoencoder"
        if target.resolve() != self.directory.resolve():
            tmp = d / ".autoencoder.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.directory, tmp, ignore=shutil.ignore_patterns("*.tmp", "samples"))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "LatentCodec":
        d = Path(directory)
        meta = json.loads((d / CONFIG_FILE).read_text())
        if meta.get("codec") != cls.name:
            raise ValueError(f"{d / CONFIG_FILE} holds codec {meta.get('codec')!r}, not {cls.name!r}; use load_codec()")
        config = from_dict(cls.config_cls, meta["config"], cls.config_cls.__name__)
        codec = cls(config, _directory=d / "autoencoder" if (d / "autoencoder" / CONFIG_FILE).is_file() else None)
        want = meta.get("autoencoder_sha256_16", "")
        if want and codec.weights_sha != want:
            raise ValueError(f"{d}: the codec was saved with autoencoder weights {want}, but {codec.directory} holds "
                             f"{codec.weights_sha}; its statistics belong to the other weights")
        if (d / STATS_FILE).exists():
            from safetensors.torch import load_file

            stats = load_file(str(d / STATS_FILE))
            for k, v in stats.items():
                codec.stats()[k].copy_(v)
        return codec


CODECS: dict[str, type[Codec]] = {"waveform": WaveformCodec, "mel": MelCodec, "image": ImageCodec,
                                  "latent": LatentCodec}


def make_codec(name: str, **config: Any) -> Codec:
    """Build a registered codec by name with config fields as keyword arguments."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid: {sorted(CODECS)}")
    cls = CODECS[name]
    return cls(from_dict(cls.config_cls, config, cls.config_cls.__name__))


def load_codec(directory: str | os.PathLike) -> Codec:
    """Load whichever registered codec ``directory/config.json`` names."""
    meta = json.loads((Path(directory) / CONFIG_FILE).read_text())
    name = meta.get("codec")
    if name not in CODECS:
        raise ValueError(f"{directory}: unknown codec {name!r}; valid: {sorted(CODECS)}")
    return CODECS[name].load(directory)
