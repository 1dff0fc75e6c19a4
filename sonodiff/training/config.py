"""Training configuration: frozen dataclasses read from TOML recipes with ``--set a.b=value`` overrides.

Unknown keys and wrong types are errors that name the key and suggest the nearest valid one
(:mod:`sonodiff.utils.config`). The resolved config is printed and saved as ``RUN_DIR/config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Literal

from sonodiff.utils.config import ConfigError, apply_overrides, from_dict, load_toml, to_dict

__all__ = [
    "DataConfig",
    "CodecConfig",
    "ModelConfig",
    "ConditioningConfig",
    "OptimConfig",
    "TrainConfig",
    "DemoConfig",
    "Config",
    "load_config",
]


@dataclass(frozen=True)
class DataConfig:
    """Where the audio is and how training examples are cut from it."""

    root: str = ""  # dataset folder (required)
    layout: Literal["folder", "fsdd", "ljspeech", "esc50", "audiocaps"] = "folder"
    cache_dir: str = ""  # feature cache; default <root>/.sonodiff_cache
    split: str = "train"
    valid_split: str = "valid"  # "" = no validation loss
    seconds: float = 1.0  # training crop length
    crop: Literal["random", "start"] = "random"
    pad: Literal["silence", "mask"] = "silence"  # short items: append encoded silence (trained) or mask it out
    prepare_workers: int = 2  # processes for the feature cache
    max_items: int = 0  # 0 = all; >0 keeps the first N items of the split (debugging)

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"data.seconds must be > 0, got {self.seconds}")


@dataclass(frozen=True)
class CodecConfig:
    """The modality adapter (``sonodiff.audio.codecs.CODECS``) and its options."""

    name: Literal["mel", "waveform"] = "mel"
    options: dict = _field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """Network, parameterization, training noise density and loss weighting."""

    network: str = "unet"
    preset: str = "tiny-2d"
    options: dict = _field(default_factory=dict)  # overrides of the preset's fields
    param: Literal["edm", "eps", "x0", "v", "flow"] = "edm"
    sigma_data: float = 1.0  # data std in diffusion space (codec-normalised data: about 1)
    density: str = "lognormal"
    density_options: dict = _field(default_factory=dict)
    weighting: str = "native"
    gamma: float = 5.0
    sigma_min: float = 0.002  # sampling range for demos and the exported model
    sigma_max: float = 80.0


@dataclass(frozen=True)
class ConditioningConfig:
    """What the model is conditioned on."""

    type: Literal["none", "class_label", "sentence", "clap_text", "clip_text", "t5"] = "none"
    field: Literal["label", "caption", "transcript", "speaker"] = "label"
    options: dict = _field(default_factory=dict)  # passed to the conditioner (e.g. path, labels, dim)
    dropout: float = 0.1  # classifier-free guidance dropout

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"conditioning.dropout must be in [0, 1], got {self.dropout}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 = off
    accumulate: int = 1  # gradient accumulation micro-steps per optimizer step

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.accumulate < 1 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0, accumulate >= 1, warmup_steps >= 0; got {self.lr}, {self.accumulate}, "
                             f"{self.warmup_steps}")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # global batch per optimizer step (all ranks, all accumulation micro-steps)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    tf32: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms; bit-exact resume on CPU
    threads: int = 0  # torch CPU threads (0 = torch default)
    ema_half_life: float = 2000.0  # in samples; 0 = EMA equals the model
    ema_rampup: float = 0.05
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    valid_every: int = 500  # steps between validation losses (0 = never)
    valid_batches: int = 4
    max_bad_steps: int = 5  # consecutive non-finite steps before aborting
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"train.steps and train.batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.checkpoint_every < 1 or self.keep_last < 1 or self.log_every < 1:
            raise ValueError("train.checkpoint_every, train.keep_last and train.log_every must be >= 1")


@dataclass(frozen=True)
class DemoConfig:
    """Periodic demo generations written to TensorBoard and RUN_DIR/demos."""

    every: int = 0  # steps; 0 = only at the end
    prompts: tuple[str, ...] = ()  # conditioning values (labels or captions); empty = unconditional
    seed: int = 0
    steps: int = 25
    sampler: str = "dpmpp_2m"
    schedule: str = "karras"
    guidance_scale: float = 2.0
    seconds: float = 0.0  # 0 = data.seconds


@dataclass(frozen=True)
class Config:
    name: str = "run"
    data: DataConfig = _field(default_factory=DataConfig)
    codec: CodecConfig = _field(default_factory=CodecConfig)
    model: ModelConfig = _field(default_factory=ModelConfig)
    conditioning: ConditioningConfig = _field(default_factory=ConditioningConfig)
    optim: OptimConfig = _field(default_factory=OptimConfig)
    train: TrainConfig = _field(default_factory=TrainConfig)
    demo: DemoConfig = _field(default_factory=DemoConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A :class:`Config` from a TOML file path (or a dict) with ``key.sub=value`` overrides applied."""
    data = source if isinstance(source, dict) else load_toml(source)
    data = apply_overrides(data, list(overrides), Config)
    cfg = from_dict(Config, data)
    if not cfg.data.root:
        raise ConfigError("data.root is empty: point it at a dataset folder (in the recipe or --set data.root=DIR)")
    return cfg
