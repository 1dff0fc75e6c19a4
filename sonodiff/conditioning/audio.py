"""CLAP audio tower as an audio-embedding conditioner (audio prompts; later, re-ranking).

The directory may hold the audio tower alone or a full two-tower ``ClapModel`` (e.g. laion/clap-htsat-unfused).
``ClapAudioModelWithProjection`` (Wu et al., "Large-scale Contrastive Language-Audio Pretraining with Feature
Fusion and Keyword-to-Caption Augmentation", 2023) and its ``ClapFeatureExtractor`` are loaded from one local
directory (never downloaded). ``tokenize(audio, sample_rate)`` takes ``[B, T]`` float audio (or a list of ``[T]``
tensors of different lengths) at the extractor's sample rate (or the single argument ``(audio, sample_rate)``)
and returns the log-mel features; ``forward``
gives ``Cond(pooled [B, projection_dim])`` (``audio_embeds``, L2-normalised when ``normalize=True``, the space in
which CLAP compares audio with text).

Clips longer than the extractor's ``max_length_s`` are cut to their first ``max_length_s`` seconds before
feature extraction (deterministic; transformers would otherwise crop at a random offset); shorter clips are
padded the extractor's way (``repeatpad`` by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from sonodiff.conditioning.base import Conditioner, ConditionerConfig
from sonodiff.conditioning.text import DTYPES, check_local_dir, load_pretrained, tower_config
from sonodiff.core.cond import Cond

__all__ = ["ClapAudioConditioner", "ClapAudioConfig", "ClapAudioTokenizer"]


@dataclass(frozen=True)
class ClapAudioConfig(ConditionerConfig):
    type = "clap_audio"
    path: str | None = None
    normalize: bool = True
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trainable: bool = False
    dropout: float = 0.0


class ClapAudioTokenizer:
    """Picklable ``(audio [B, T] | list of [T], sample_rate) -> {"input_features": [B, C, frames, mels],
    "is_longer": [B, 1] bool}``; the feature extractor is loaded lazily and not pickled."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._fe = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fe": None}

    @property
    def feature_extractor(self):
        if self._fe is None:
            from transformers import ClapFeatureExtractor

            self._fe = load_pretrained(ClapFeatureExtractor, check_local_dir(self.path, "CLAP feature extractor"),
                                       "CLAP feature extractor")
        return self._fe

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def __call__(self, audio: Tensor | Sequence[Tensor], sample_rate: int | None = None) -> dict[str, Tensor]:
        if sample_rate is None and isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[1], int):
            audio, sample_rate = audio  # the single-argument form ``(audio, sample_rate)`` used in compositions
        fe = self.feature_extractor
        if sample_rate is None:
            raise ValueError(f"pass sample_rate= (Hz) with the audio; this CLAP model expects {fe.sampling_rate} Hz")
        if int(sample_rate) != int(fe.sampling_rate):
            raise ValueError(f"audio at {sample_rate} Hz but this CLAP model expects {fe.sampling_rate} Hz; resample "
                             "first (sonodiff.audio.io.resample)")
        if isinstance(audio, Tensor) and audio.ndim != 2:
            raise ValueError(f"audio must be [B, T] (mono) or a list of [T] tensors, got shape {tuple(audio.shape)}")
        clips = list(audio.unbind(0)) if isinstance(audio, Tensor) else list(audio)
        if not clips:
            raise ValueError("tokenize got no audio clips")
        arrays = []
        for i, c in enumerate(clips):
            c = torch.as_tensor(c)
            if c.ndim != 1 or c.numel() == 0 or not bool(torch.isfinite(c).all()):
                raise ValueError(f"clip {i} must be a non-empty finite 1-D [T] signal, got shape {tuple(c.shape)}")
            arrays.append(c[: fe.nb_max_samples].detach().cpu().float().numpy())
        feats = fe(arrays, sampling_rate=fe.sampling_rate, return_tensors="pt")
        return {"input_features": feats["input_features"].float(), "is_longer": feats["is_longer"].bool()}


class ClapAudioConditioner(Conditioner):
    """``{"input_features", "is_longer"}`` -> ``Cond(pooled [B, projection_dim])``."""

    name = "clap_audio"
    config_cls = ClapAudioConfig

    def __init__(self, config: ClapAudioConfig) -> None:
        super().__init__(config)
        if not config.path:
            raise ValueError("clap_audio needs path= (a local directory with a CLAP audio model and its "
                             "preprocessor_config.json)")
        from transformers import ClapAudioModelWithProjection

        self.path = check_local_dir(config.path, "CLAP audio")
        kw = {"dtype": DTYPES[config.dtype]}
        if (ac := tower_config(self.path, "audio_config")) is not None:  # a full two-tower CLAP checkpoint
            kw["config"] = ac
        self.model = load_pretrained(ClapAudioModelWithProjection, self.path, "CLAP audio model", **kw)
        self._tokenizer = ClapAudioTokenizer(self.path)
        self._apply_freezing()

    @property
    def pooled_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def sample_rate(self) -> int:
        return self._tokenizer.sample_rate

    def get_tokenizer(self) -> ClapAudioTokenizer:
        return self._tokenizer

    def tokenize(self, inputs, sample_rate: int | None = None) -> dict[str, Tensor]:
        return self._tokenizer(inputs, sample_rate)

    def weights(self) -> dict[str, Tensor]:
        return super().weights() if self.trainable else {}

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        dev = self.device
        feats = batch["input_features"].to(dev, self.model.dtype)
        out = self.model(input_features=feats, is_longer=batch["is_longer"].to(dev))
        pooled = out.audio_embeds.float()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return Cond(pooled=pooled.to(out.audio_embeds.dtype))
