"""Vocoders: a mel codec's natural-log mel -> audio, chosen by name or model directory (``VOCODERS``).

Every vocoder is called as ``voc(log_mel [B, C, n_mels, frames], length=None) -> audio [B, C, T]`` (natural-log
mel, as :func:`sonodiff.audio.features.log_mel` computes it and a mel codec's ``decode`` returns it) and has
``mel_config`` (the :class:`~sonodiff.audio.features.MelConfig` of the features it voices) and ``sample_rate``.

``VOCODERS``:

- ``griffin_lim``: no weights; phase by fast Griffin-Lim (:class:`~sonodiff.audio.vocoder.GriffinLimVocoder`),
  for any mel settings.
- ``neural``: the in-house GAN vocoder (:class:`~sonodiff.audio.neural_vocoder.NeuralVocoder`), from a vocoder
  model directory that ``sonodiff export`` writes for a ``task = "vocoder"`` run.
- ``speecht5_hifigan``: transformers' ``SpeechT5HifiGan`` from a local directory (``save_pretrained``). It voices
  log10 mels (SpeechT5's feature extractor: ``log10(max(mel, 1e-10))``, 80 bins, 16 kHz, n_fft 1024, hop 256,
  fmin 80, fmax 7600, slaney), so the codec's natural-log mel is divided by ln 10; the vocoder directory records
  which mel settings the checkpoint was trained on.

A vocoder model directory::

    VOCODER_DIR/
        config.json   {"format": "sonodiff-model", "format_version": 1, "kind": "vocoder",
                       "vocoder": "neural" | "speecht5_hifigan", "mel": {MelConfig fields},
                       "config": {...the network's config}, "transformers_dir": "..." (speecht5_hifigan),
                       "source": {...}}
        model.safetensors   (neural) the generator's EMA weights
        MODEL_CARD.md

:func:`load_vocoder` resolves ``"griffin_lim"``, a shipped vocoder name (``sonodiff/models/<name>``) or a
directory, and with ``expect=`` (the codec's MelConfig) refuses a vocoder of other mel settings, naming both.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from sonodiff.audio.features import MelConfig

__all__ = ["VOCODERS", "load_vocoder", "save_vocoder_dir", "check_vocoder_matches", "mel_config_of",
           "SPEECHT5_MEL", "wrap_speecht5_hifigan"]

FORMAT, FORMAT_VERSION = "sonodiff-model", 1

# SpeechT5's feature extractor settings (transformers SpeechT5FeatureExtractor defaults)
SPEECHT5_MEL = MelConfig(sample_rate=16000, n_fft=1024, hop_length=256, win_length=1024, window="hann", n_mels=80,
                         f_min=80.0, f_max=7600.0, mel_scale="slaney", power=1.0, log_floor=1e-10, center=True)

# the settings that must agree between a codec and its vocoder (log_floor only moves the silence floor)
_MATCH = ("sample_rate", "n_fft", "hop_length", "win_length", "window", "n_mels", "f_min", "f_max", "mel_scale",
          "power", "center")


def mel_config_of(config) -> MelConfig:
    """The plain :class:`MelConfig` of a mel codec's config (or any object with its fields)."""
    return MelConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(MelConfig)})


def check_vocoder_matches(vocoder_mel: MelConfig, codec_mel: MelConfig, where: str) -> None:
    """Raise naming every differing setting unless the vocoder voices the codec's features."""
    a, b = mel_config_of(vocoder_mel), mel_config_of(codec_mel)
    eff = lambda c, k: (c.win_length or c.n_fft) if k == "win_length" else getattr(c, k)  # noqa: E731
    diffs = [f"{k}: vocoder {eff(a, k)!r}, model {eff(b, k)!r}" for k in _MATCH if eff(a, k) != eff(b, k)]
    if diffs:
        raise ValueError(f"vocoder {where} does not match the model's mel codec ({'; '.join(diffs)}); use a "
                         f"vocoder trained on these mel settings, or --vocoder griffin_lim")


# --------------------------------------------------------------------------------------------- the vocoders
class _GriffinLim:
    def __init__(self, mel: MelConfig) -> None:
        from sonodiff.audio.vocoder import GriffinLimVocoder

        self.mel_config, self.name = mel, "griffin_lim"
        self._gl = GriffinLimVocoder(mel)

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def __call__(self, log_mel: Tensor, length: int | None = None) -> Tensor:
        return self._gl(log_mel, length=length)


class _Neural:
    """A :class:`NeuralVocoder` in eval mode; channels folded into the batch."""

    def __init__(self, net, name: str) -> None:
        self.net, self.name = net.eval(), name
        self.mel_config = net.config.mel_config()

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def to(self, device=None, dtype=None) -> _Neural:
        self.net.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def __call__(self, log_mel: Tensor, length: int | None = None) -> Tensor:
        lead, (M, F) = log_mel.shape[:-2], log_mel.shape[-2:]
        p = next(self.net.parameters())
        x = log_mel.reshape(-1, M, F).to(p.device, p.dtype)
        audio = self.net(x, length=length).float()
        return audio.reshape(*lead, audio.shape[-1]).to(log_mel.device)


class _SpeechT5:
    """transformers ``SpeechT5HifiGan``: log-mel (natural) -> log10 mel ``[B, frames, n_mels]`` -> audio."""

    def __init__(self, model, mel: MelConfig, name: str) -> None:
        self.model, self.mel_config, self.name = model.eval(), mel, name

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @staticmethod
    def to_log10(log_mel: Tensor) -> Tensor:
        """The natural-log mel of :func:`log_mel` in SpeechT5's convention, ``log10(mel)``."""
        return log_mel / math.log(10.0)

    @torch.no_grad()
    def __call__(self, log_mel: Tensor, length: int | None = None) -> Tensor:
        lead, (M, F) = log_mel.shape[:-2], log_mel.shape[-2:]
        p = next(self.model.parameters())
        x = self.to_log10(log_mel.reshape(-1, M, F).float()).transpose(1, 2).to(p.device, p.dtype)
        audio = self.model(x).float()
        if audio.ndim == 1:
            audio = audio[None]
        n = length if length is not None else (F - 1) * self.mel_config.hop_length
        audio = audio[:, :n] if audio.shape[-1] >= n else torch.nn.functional.pad(audio, (0, n - audio.shape[-1]))
        return audio.reshape(*lead, n).to(log_mel.device)


def _load_neural(d: Path, cfg: dict):
    from sonodiff.audio.neural_vocoder import NeuralVocoder, NeuralVocoderConfig
    from sonodiff.utils.modules import load_weights

    net = NeuralVocoder(NeuralVocoderConfig.from_dict(cfg["config"]))
    load_weights(net, d / "model.safetensors", f"the vocoder in {d / 'config.json'}")
    return _Neural(net, str(d))


def _load_speecht5(d: Path, cfg: dict):
    from transformers import SpeechT5HifiGan

    tdir = Path(cfg.get("transformers_dir", "."))
    tdir = tdir if tdir.is_absolute() else d / tdir
    if not (tdir / "config.json").is_file():
        raise FileNotFoundError(f"{d}: its SpeechT5HifiGan directory {tdir} has no config.json (a transformers "
                                "save_pretrained folder is expected)")
    model = SpeechT5HifiGan.from_pretrained(str(tdir), local_files_only=True)
    mel = MelConfig(**cfg["mel"])
    if model.config.model_in_dim != mel.n_mels or model.config.sampling_rate != mel.sample_rate:
        raise ValueError(f"{tdir}: SpeechT5HifiGan takes {model.config.model_in_dim} mel bins at "
                         f"{model.config.sampling_rate} Hz but {d / 'config.json'} says {mel.n_mels} at {mel.sample_rate}")
    return _SpeechT5(model, mel, str(d))


VOCODERS = {"griffin_lim": None, "neural": _load_neural, "speecht5_hifigan": _load_speecht5}


def load_vocoder(spec: str | Path, expect: MelConfig | None = None, base: str | Path | None = None):
    """The vocoder ``spec`` names: ``"griffin_lim"`` (needs ``expect``, the mel settings to invert), a shipped
    vocoder name, or a vocoder model directory (absolute, or relative to ``base``). With ``expect`` a vocoder
    for other mel settings is a clear error naming both."""
    if isinstance(spec, str) and spec == "griffin_lim":
        if expect is None:
            raise ValueError("griffin_lim needs the mel settings it inverts (expect=the codec's MelConfig)")
        return _GriffinLim(mel_config_of(expect))
    d = _resolve(spec, base)
    cfg_path = d / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
    if cfg.get("format") != FORMAT or cfg.get("kind") != "vocoder":
        raise ValueError(f"{d} is not a vocoder model directory ({cfg_path} has format {cfg.get('format')!r}, kind "
                         f"{cfg.get('kind', 'diffusion')!r}); valid vocoders: 'griffin_lim', a shipped vocoder "
                         f"({_shipped()}) or a directory written by `sonodiff export` for a vocoder run")
    kind = cfg.get("vocoder")
    if kind not in VOCODERS or VOCODERS[kind] is None:
        raise ValueError(f"{cfg_path}: vocoder {kind!r} is not a loadable vocoder kind; valid: "
                         f"{sorted(k for k, v in VOCODERS.items() if v is not None)}")
    voc = VOCODERS[kind](d, cfg)
    if expect is not None:
        check_vocoder_matches(voc.mel_config, expect, str(d))
    return voc


def _shipped() -> list[str]:
    from sonodiff.models import MODELS_DIR

    out = []
    for d in sorted(MODELS_DIR.iterdir()):
        c = d / "config.json"
        if c.is_file() and json.loads(c.read_text()).get("kind") == "vocoder":
            out.append(d.name)
    return out


def _resolve(spec: str | Path, base) -> Path:
    from sonodiff.models import MODELS_DIR

    p = Path(spec)
    for cand in ([p] if p.is_absolute() else [Path(base) / p] if base is not None else []) + [p, MODELS_DIR / str(spec)]:
        if (cand / "config.json").is_file():
            return cand
    raise FileNotFoundError(f"vocoder {str(spec)!r} is neither 'griffin_lim', a shipped vocoder ({_shipped()}) nor a "
                            "vocoder model directory")


def save_vocoder_dir(out: str | Path, *, kind: str, mel: MelConfig, config: dict, state: dict | None,
                     source: dict, transformers_dir: str | None = None) -> Path:
    """Write a vocoder model directory (atomic files)."""
    from sonodiff import __version__
    from sonodiff.models.model_dir import weights_hash
    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

    if kind not in VOCODERS or VOCODERS[kind] is None:
        raise ValueError(f"vocoder kind {kind!r}; valid: {sorted(k for k, v in VOCODERS.items() if v is not None)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "sonodiff_version": __version__, "kind": "vocoder",
            "vocoder": kind, "mel": dataclasses.asdict(mel_config_of(mel)), "config": config, "source": source}
    if state is not None:
        atomic_save_tensors(out / "model.safetensors", {k: v.contiguous() for k, v in state.items()})
        body["weights_sha256_16"] = weights_hash(out / "model.safetensors")
    if transformers_dir is not None:
        body["transformers_dir"] = transformers_dir
    atomic_write_json(out / "config.json", body, indent=1)
    return out


def wrap_speecht5_hifigan(transformers_dir: str | Path, out: str | Path, mel: MelConfig = SPEECHT5_MEL) -> Path:
    """A vocoder model directory for a local ``SpeechT5HifiGan`` checkpoint (``save_pretrained`` folder),
    recording the mel settings it was trained on (SpeechT5's by default)."""
    import os

    t, o = Path(transformers_dir).resolve(), Path(out).resolve()
    inside = o == t or o in t.parents
    return save_vocoder_dir(out, kind="speecht5_hifigan", mel=mel, config={}, state=None,
                            source={"transformers_dir": t.name},
                            transformers_dir=os.path.relpath(t, o) if inside else str(t))
