"""The in-house CLAP network (trained by ``task = "contrastive"``) and its conditioner ``clap_inhouse``.

:class:`ClapNet`: a small CNN audio tower on natural-log mels (normalised by training-split statistics kept as
buffers, pooled over frequency by the mean and over time by mean + max) and a trained two-layer projection of the
frozen all-MiniLM-L6-v2 sentence vector, both L2-normalised into one ``embed_dim`` space, and a learned
temperature. Metrics, retrieval and the model-directory format are in :mod:`sonodiff.eval.clap`.

:class:`InHouseClapConditioner` (``type = "clap_inhouse"``, ``path`` = a CLAP model directory) conditions a
diffusion model on the CLAP embedding ``Cond(pooled [B, embed_dim])`` of a text, or of an audio example
(``input = "audio"`` or ``tokenize(("audio", clips, sample_rate))``): a model trained on text embeddings can be
driven by a sound, as AudioLDM does with real CLAP. Frozen: the weights are referenced, never copied.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sonodiff.conditioning.base import Conditioner, ConditionerConfig
from sonodiff.core.cond import Cond

__all__ = ["ClapConfig", "ClapNet", "load_clap_net", "InHouseClapConfig", "InHouseClapConditioner",
           "resolve_clap_dir"]


@dataclass(frozen=True)
class ClapConfig:
    # what the tower embeds: "audio" (log-mels) or "image" (pixels: the in-house CLIP, a text-image model)
    modality: str = "audio"
    channels: int = 1  # image: 1 (greyscale) or 3 (RGB)
    image_height: int = 0  # image: the size the tower is trained on (convolutional and pooled: others run too)
    image_width: int = 0
    # the audio features (a mel codec's settings; natural-log magnitude mels)
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float | None = None
    log_floor: float = 1e-5
    # the network
    width: int = 64            # channels of the second CNN stage (w/2, w, 2w, 4w)
    embed_dim: int = 256       # the shared space
    text_dim: int = 384        # the frozen sentence encoder's pooled size
    text_hidden: int = 512
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.modality not in ("audio", "image"):
            raise ValueError(f"ClapConfig.modality must be 'audio' or 'image', got {self.modality!r}")
        if self.modality == "image" and (self.channels not in (1, 3) or self.image_height < 1 or self.image_width < 1):
            raise ValueError(f"an image ClapConfig needs channels 1 or 3 and image_height, image_width >= 1, got "
                             f"{self.channels}, {self.image_height}x{self.image_width}")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "width", "embed_dim", "text_dim", "text_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClapConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % 2:
            raise ValueError(f"ClapConfig.width must be even, got {self.width}")
        if not 0 < self.init_temperature < 1 or self.max_logit_scale <= 1:
            raise ValueError(f"ClapConfig needs 0 < init_temperature < 1 and max_logit_scale > 1, got "
                             f"{self.init_temperature}, {self.max_logit_scale}")

    def mel_config(self):
        from sonodiff.audio.features import MelConfig

        return MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                         n_mels=self.n_mels, f_min=self.f_min, f_max=self.f_max, log_floor=self.log_floor)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClapConfig:
        from sonodiff.utils.config import from_dict

        return from_dict(cls, d, "clap")


def _conv(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.GroupNorm(min(8, o), o), nn.SiLU())


class ClapNet(nn.Module):
    """The trained part of the in-house CLAP: audio tower on log-mels, text projection, temperature. With
    ``modality="image"`` the same tower takes pixels (the in-house CLIP): normalised by the training images'
    mean and std, pooled over height (mean) and width (mean + max) as a mel is over frequency and time."""

    def __init__(self, config: ClapConfig) -> None:
        super().__init__()
        from sonodiff.audio.features import mel_filterbank

        self.config = c = config
        w = c.width
        self.register_buffer("fb", mel_filterbank(c.mel_config()), persistent=False)
        # log-mel normalisation from the training split (set by the contrastive task, saved with the weights)
        self.register_buffer("feat_mean", torch.zeros(()))
        self.register_buffer("feat_std", torch.ones(()))
        self.audio = nn.Sequential(
            _conv(c.channels if c.modality == "image" else 1, w // 2), nn.MaxPool2d(2),
            _conv(w // 2, w), _conv(w, w), nn.MaxPool2d(2),
            _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w), _conv(4 * w, 4 * w),
        )
        self.audio_proj = nn.Sequential(nn.Linear(8 * w, 2 * c.embed_dim), nn.SiLU(), nn.Linear(2 * c.embed_dim, c.embed_dim))
        self.text_proj = nn.Sequential(nn.Linear(c.text_dim, c.text_hidden), nn.SiLU(),
                                       nn.Linear(c.text_hidden, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    def log_mel(self, audio: Tensor) -> Tensor:
        """audio ``[B, T]`` at ``config.sample_rate`` -> natural-log mel ``[B, n_mels, frames]`` (float32)."""
        from sonodiff.audio.features import log_mel

        with torch.autocast(audio.device.type, enabled=False):
            return log_mel(audio.float(), self.config.mel_config(), self.fb)

    def embed_mel(self, mel: Tensor) -> Tensor:
        """log-mel ``[B, n_mels, frames]`` -> L2-normalised audio embedding ``[B, D]`` (float32)."""
        return self._embed(((mel - self.feat_mean) / self.feat_std)[:, None])

    def embed_pixels(self, images: Tensor) -> Tensor:
        """images ``[B, C, H, W]`` (uint8, or float 0..255) -> L2-normalised image embedding ``[B, D]``."""
        c = self.config
        if c.modality != "image":
            raise ValueError("this is an audio CLAP: it embeds log-mels (embed_mel), not images")
        if images.ndim != 4 or images.shape[1] != c.channels:
            raise ValueError(f"the in-house CLIP embeds images [B, {c.channels}, H, W], got {list(images.shape)}")
        return self._embed((images.float() - self.feat_mean) / self.feat_std)

    def embed_input(self, x: Tensor) -> Tensor:
        """The tower's input (a log-mel ``[B, n_mels, frames]``, or images ``[B, C, H, W]``) -> embedding."""
        return self.embed_pixels(x) if self.config.modality == "image" else self.embed_mel(x)

    def _embed(self, x: Tensor) -> Tensor:
        h = self.audio(x).mean(dim=2)  # [B, C, frames / 8] (images: [B, C, W / 8])
        h = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)
        return nn.functional.normalize(self.audio_proj(h).float(), dim=-1)

    def embed_text_features(self, feats: Tensor) -> Tensor:
        """frozen sentence-encoder vectors ``[B, text_dim]`` -> L2-normalised text embedding ``[B, D]``."""
        return nn.functional.normalize(self.text_proj(feats).float(), dim=-1)

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()


def resolve_clap_dir(name_or_path: str | Path) -> Path:
    """A CLAP model directory, or the name of one shipped in ``sonodiff/models``."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    shipped = Path(__file__).resolve().parents[1] / "models" / str(name_or_path)
    if "/" not in str(name_or_path) and shipped.is_dir():
        return shipped
    raise FileNotFoundError(f"CLAP model {str(name_or_path)!r} is neither a directory nor a shipped model "
                            f"(sonodiff/models/<name>)")


def load_clap_net(path: str | Path) -> ClapNet:
    """The :class:`ClapNet` of an in-house CLAP model directory (config.json kind "clap" + model.safetensors)."""
    from safetensors.torch import load_file

    p = resolve_clap_dir(path)
    c = json.loads((p / "config.json").read_text())
    if c.get("kind") != "clap":
        raise ValueError(f"{p / 'config.json'}: kind={c.get('kind', c.get('model_type'))!r}, not an in-house CLAP "
                         f"(kind 'clap')")
    net = ClapNet(ClapConfig.from_dict(c["clap"]))
    state = load_file(str(p / "model.safetensors"))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "fb"]
    if missing or unexpected:
        raise ValueError(f"{p / 'model.safetensors'} does not match its config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    return net.eval()


@dataclass(frozen=True)
class InHouseClapConfig(ConditionerConfig):
    """``path``: an in-house CLAP directory or shipped name (required); ``input``: what ``tokenize`` takes by
    default, "text" (a list of strings) or "audio" (``(clips, sample_rate)``)."""

    type = "clap_inhouse"
    path: str = ""
    input: str = "text"
    trainable: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("clap_inhouse conditioner needs path= (a CLAP model directory or shipped name)")
        if self.input not in ("text", "audio"):
            raise ValueError(f"clap_inhouse input must be 'text' or 'audio', got {self.input!r}")
        if self.trainable:
            raise ValueError("clap_inhouse is frozen (trainable=false): it conditions on a fixed embedding space")


class ClapInputTokenizer:
    """Picklable: texts -> MiniLM token ids; ``("audio", clips, sample_rate)`` (or clips with ``input="audio"``)
    -> padded log-mel frames of the CLAP's settings."""

    def __init__(self, text_tokenizer, mel_cfg, default: str) -> None:
        self.text, self.mel, self.default = text_tokenizer, mel_cfg, default

    def __call__(self, inputs, sample_rate: int | None = None) -> dict[str, Tensor]:
        """``inputs``: texts; or ``("audio", clips, sample_rate)``; or rows ``("audio", clip [T], sample_rate)``
        (the form a pipeline prompt takes); or clips with ``sample_rate`` when the config's input is "audio"."""
        if isinstance(inputs, tuple) and len(inputs) == 3 and inputs[0] == "audio":
            _, clips, sample_rate = inputs
            rows = [(c, int(sample_rate)) for c in (clips.unbind(0) if isinstance(clips, Tensor) else clips)]
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
            b = self.text(list(inputs))
            return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, tuple) and len(x) == 3 and x[0] == "audio"
                                                                   for x in inputs):
            rows = [(x[1], int(x[2])) for x in inputs]
        elif self.default == "audio":
            if sample_rate is None:
                raise ValueError(f"audio prompts need their sample rate; this CLAP works at {self.mel.sample_rate} Hz")
            rows = [(c, int(sample_rate)) for c in (inputs.unbind(0) if isinstance(inputs, Tensor) else inputs)]
        else:
            raise ValueError("clap_inhouse takes a list of texts, or audio as ('audio', clips, sample_rate) or rows "
                             f"('audio', clip, sample_rate); got {type(inputs).__name__}")
        from sonodiff.audio.features import log_mel
        from sonodiff.audio.io import resample

        clips = [resample(torch.as_tensor(c).float().reshape(1, -1), sr, self.mel.sample_rate)[0] for c, sr in rows]
        n = max(max(len(c) for c in clips), self.mel.n_fft + 1)
        a = torch.stack([nn.functional.pad(c, (0, n - len(c))) for c in clips])
        return {"log_mel": log_mel(a, self.mel)}


class InHouseClapConditioner(Conditioner):
    """Text or audio -> ``Cond(pooled [B, embed_dim])`` in the in-house CLAP's space (see the module docstring)."""

    config_cls = InHouseClapConfig
    name = "clap_inhouse"

    def __init__(self, config: InHouseClapConfig) -> None:
        super().__init__(config)
        from sonodiff.conditioning.text import SentenceConfig, SentenceEncoder

        self.net = load_clap_net(config.path)
        self.text = SentenceEncoder(SentenceConfig(normalize=True))
        self._apply_freezing()

    @property
    def pooled_dim(self) -> int:
        return self.net.config.embed_dim

    def get_tokenizer(self) -> ClapInputTokenizer:
        return ClapInputTokenizer(self.text.get_tokenizer(), self.net.config.mel_config(), self.config.input)

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        if "log_mel" in batch:
            return Cond(pooled=self.net.embed_mel(batch["log_mel"].to(self.device).float()))
        t = self.text.encode({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).pooled
        return Cond(pooled=self.net.embed_text_features(t.float().to(self.device)))

    def weights(self) -> dict[str, Tensor]:
        return {}  # frozen: the config references the CLAP directory
