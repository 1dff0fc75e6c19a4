"""Training configuration: frozen dataclasses read from TOML recipes with ``--set a.b=value`` overrides.

Unknown keys and wrong types are errors that name the key and suggest the nearest valid one
(:mod:`sonodiff.utils.config`). A field that names an entry of a registry (codec, network, parameterization,
density, weighting, conditioner, dataset layout, sampler, schedule) is a ``str`` checked against that dict when
the config is built, never against a copied ``Literal``; the error names the field, the value and the valid
names. The registries are imported inside the checks, so importing this module stays light. The resolved
config is printed and saved as ``RUN_DIR/config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Literal

from sonodiff.utils.config import ConfigError, _suggest, apply_overrides, from_dict, load_toml, to_dict

__all__ = [
    "DataConfig",
    "CodecConfig",
    "ModelConfig",
    "ConditioningConfig",
    "OptimConfig",
    "TrainConfig",
    "DemoConfig",
    "VocoderConfig",
    "AutoencoderConfig",
    "Config",
    "load_config",
    "sampling_defaults",
]


def _check_name(field: str, value: str, table, what: str) -> None:
    """Raise unless ``value`` is a key of the registry ``table``: name the field, the value and the valid names."""
    if value not in table:
        raise ValueError(f"{field}={value!r} is not a registered {what}{_suggest(value, list(table))}")


def _check_sampler_options(field: str, sampler: str, options: dict) -> None:
    from sonodiff.core.samplers import sampler_options

    valid = sorted(sampler_options(sampler))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{field}: sampler {sampler!r} has no option(s) {unknown}; its options are {valid}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how training examples are cut from it (``seconds``, ``crop`` and ``pad`` are for
    audio; an image codec's examples are its whole fixed-size images)."""

    root: str = ""  # dataset folder (required)
    # a data set that ships inside an installed package (sonodiff.data.bundled.BUNDLED: "mnist", "sklearn_digits"),
    # written to ``root`` as a folder dataset the first time a run needs it; empty = root is the user's data
    bundled: str = ""
    layout: str = "folder"  # a key of sonodiff.data.layouts.LAYOUTS
    cache_dir: str = ""  # feature cache; default <root>/.sonodiff_cache
    split: str = "train"
    valid_split: str = "valid"  # "" = no validation loss
    seconds: float = 1.0  # training crop length
    crop: Literal["random", "start"] = "random"
    pad: Literal["silence", "mask"] = "silence"  # short items: append encoded silence (trained) or mask it out
    prepare_workers: int = 2  # processes for the feature cache
    max_items: int = 0  # 0 = all; >0 keeps the first N items of the split (debugging)

    def __post_init__(self) -> None:
        from sonodiff.data.layouts import LAYOUTS

        _check_name("data.layout", self.layout, LAYOUTS, "dataset layout")
        if self.bundled:
            from sonodiff.data.bundled import BUNDLED

            _check_name("data.bundled", self.bundled, BUNDLED, "bundled data set")
        if self.seconds <= 0:
            raise ValueError(f"data.seconds must be > 0, got {self.seconds}")


@dataclass(frozen=True)
class CodecConfig:
    """The modality adapter (``sonodiff.audio.codecs.CODECS``) and its options."""

    name: str = "mel"  # a key of sonodiff.audio.codecs.CODECS
    options: dict = _field(default_factory=dict)

    def __post_init__(self) -> None:
        from sonodiff.audio.codecs import CODECS, make_codec

        _check_name("codec.name", self.name, CODECS, "codec")
        try:
            make_codec(self.name, **self.options)  # cheap: no statistics, no filterbank yet
        except (TypeError, ValueError) as e:
            raise ValueError(f"codec.options for codec {self.name!r}: {e}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Network, parameterization, training noise density and loss weighting."""

    network: str = "unet"  # a key of sonodiff.nn.NETWORKS
    preset: str = "tiny-2d"
    options: dict = _field(default_factory=dict)  # overrides of the preset's fields
    param: str = "edm"  # sonodiff.core.param.PARAMETERIZATIONS
    sigma_data: float = 1.0  # data std in diffusion space (codec-normalised data: about 1)
    density: str = "lognormal"  # sonodiff.core.schedules.DENSITIES
    density_options: dict = _field(default_factory=dict)  # the density's parameters, and shift (multiplies sigma)
    weighting: str = "native"  # sonodiff.core.param.WEIGHTINGS
    gamma: float = 5.0
    sigma_min: float = 0.002  # sampling range for demos and the exported model
    sigma_max: float = 80.0

    def __post_init__(self) -> None:
        import torch

        from sonodiff.core.param import PARAMETERIZATIONS, WEIGHTINGS
        from sonodiff.core.schedules import DENSITIES, sample_sigmas
        from sonodiff.nn import NETWORKS

        _check_name("model.network", self.network, NETWORKS, "network")
        _check_name("model.param", self.param, PARAMETERIZATIONS, "parameterization")
        _check_name("model.density", self.density, DENSITIES, "training noise density")
        _check_name("model.weighting", self.weighting, WEIGHTINGS, "loss weighting")
        try:  # one draw with a local generator checks the option names and values (shift included)
            sample_sigmas(self.density, 1, generator=torch.Generator().manual_seed(0), **self.density_options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model.density_options {self.density_options} for density {self.density!r}: {e}") from None
        if not self.gamma > 0:
            raise ValueError(f"model.gamma must be > 0, got {self.gamma}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < model.sigma_min < model.sigma_max, got {self.sigma_min}, {self.sigma_max}")


@dataclass(frozen=True)
class ConditioningConfig:
    """What the model is conditioned on."""

    type: str = "none"  # "none" or a key of sonodiff.conditioning.registry.CONDITIONERS
    # the item field that labels and texts come from: label, caption, transcript, speaker, or meta.KEY (an extra
    # metadata column, e.g. meta.bpm for "number" conditioning); timing takes the crop's start and the item's length
    field: str = "label"
    fields: dict = _field(default_factory=dict)  # composed: component name -> its field (default: field)
    options: dict = _field(default_factory=dict)  # passed to the conditioner (e.g. path, labels, dim)
    dropout: float = 0.1  # classifier-free guidance dropout

    def __post_init__(self) -> None:
        from sonodiff.conditioning.registry import CONDITIONERS
        from sonodiff.data.items import KNOWN_FIELDS

        _check_name("conditioning.type", self.type, {"none": None, **CONDITIONERS}, "conditioner")
        valid = [f for f in KNOWN_FIELDS if f not in ("path", "split")]
        for where, f in [("conditioning.field", self.field)] + [(f"conditioning.fields.{k}", v)
                                                               for k, v in self.fields.items()]:
            if not isinstance(f, str) or (f not in valid and not (f.startswith("meta.") and len(f) > 5)):
                raise ValueError(f"{where}={f!r} is not an item field{_suggest(str(f), valid)} "
                                 "(or meta.KEY for an extra metadata column)")
        if self.fields:
            comps = self.options.get("conditioners", {}) if self.type == "composed" else {}
            unknown = sorted(set(self.fields) - set(comps))
            if unknown:
                raise ValueError(f"conditioning.fields names {unknown}, which are not components of the composed "
                                 f"conditioner (its components: {sorted(comps)})")
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
    # "auto": bf16 autocast where the hardware does bf16 natively (AVX512-BF16 / AMX CPUs, bf16 GPUs), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    tf32: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms; bit-exact resume on CPU
    threads: int = 0  # torch CPU threads (0 = torch default)
    ema_half_life: float = 2000.0  # in samples; 0 = EMA equals the model
    ema_rampup: float = 0.05
    # Post-hoc EMA (Karras et al. 2024, EDM2): the sigma_rel of each power-function EMA profile to store, e.g.
    # [0.05, 0.10]; 0 < sigma_rel <= 0.3003. Empty = off. Each profile's average is written every
    # posthoc_ema_every steps (and at the last step) to RUN_DIR/posthoc_ema/<sigma_rel>/step_XXXXXXXX.safetensors;
    # `sonodiff export --ema-sigma-rel S` reconstructs any EMA length S from them. Must be set when the run starts.
    posthoc_ema: tuple[float, ...] = ()
    posthoc_ema_every: int = 0  # optimizer steps between post-hoc EMA snapshots; required > 0 with posthoc_ema
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    valid_every: int = 500  # steps between validation losses (0 = never)
    valid_batches: int = 4
    max_bad_steps: int = 5  # consecutive non-finite steps before aborting
    tensorboard: bool = True
    progress: bool = True
    # a frozen text encoder's output for each distinct text is computed once and reused (the same numbers as
    # encoding every batch, up to float rounding; DiffusionModel.enable_text_memo); false = encode every batch
    text_memo: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"train.steps and train.batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.checkpoint_every < 1 or self.keep_last < 1 or self.log_every < 1:
            raise ValueError("train.checkpoint_every, train.keep_last and train.log_every must be >= 1")
        if self.posthoc_ema_every < 0:
            raise ValueError(f"train.posthoc_ema_every must be >= 0 (steps between post-hoc EMA snapshots), got "
                             f"{self.posthoc_ema_every}")
        if self.posthoc_ema:
            from sonodiff.training.posthoc_ema import profile_name, sigma_rel_to_gamma

            if self.posthoc_ema_every < 1:
                raise ValueError(f"train.posthoc_ema={list(self.posthoc_ema)} needs train.posthoc_ema_every > 0 "
                                 f"(optimizer steps between snapshots, e.g. 1000), got {self.posthoc_ema_every}")
            for i, s in enumerate(self.posthoc_ema):
                try:
                    sigma_rel_to_gamma(s)
                except ValueError as e:
                    raise ValueError(f"train.posthoc_ema[{i}]: {e}") from None
            names = [profile_name(s) for s in self.posthoc_ema]
            if len(set(names)) != len(names):
                raise ValueError(f"train.posthoc_ema={list(self.posthoc_ema)} repeats a profile; list each sigma_rel once")


@dataclass(frozen=True)
class DemoConfig:
    """Periodic demo generations written to TensorBoard and RUN_DIR/demos."""

    every: int = 0  # steps; 0 = only at the end
    prompts: tuple[str, ...] = ()  # conditioning values (labels or captions); empty = unconditional
    seed: int = 0
    steps: int = 25
    sampler: str = "dpmpp_2m"  # a key of sonodiff.core.SAMPLERS
    sampler_options: dict = _field(default_factory=dict)  # the sampler's keyword options, e.g. {eta = 0.5}
    schedule: str = "karras"  # a key of sonodiff.core.SCHEDULES
    schedule_options: dict = _field(default_factory=dict)  # the grid's options, e.g. {rho = 5} or {shift = 3}
    guidance_scale: float = 2.0
    cfg_rescale: float = 0.0  # guidance rescale phi in [0, 1] (Lin et al. 2024)
    # guide only at noise levels lo < sigma <= hi (Kynkaanniemi et al. 2024); unset = guide at every step
    guidance_interval: tuple[float, float] | None = None
    seconds: float = 0.0  # 0 = data.seconds
    max_window_seconds: float = 0.0  # longest clip the exported model generates in one pass; 0 = data.seconds
    # Autoguidance (Karras et al. 2024): a checkpoint of this run, e.g. "step_00001450", whose EMA weights guide
    # sampling in place of the unconditional branch (guidance_scale is then the autoguidance weight w). It is kept
    # from checkpoint pruning and exported into MODEL_DIR/guide, its weights stored as guide_dtype. Empty = CFG.
    # Training demos use classifier-free guidance (the guide may not exist yet).
    guide: str = ""
    guide_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    # mel models: what voices them, in demos and in the exported model (audio.vocoder): griffin_lim, a shipped
    # vocoder name (e.g. vocoder_8k) or a vocoder model directory
    vocoder: str = "griffin_lim"

    def __post_init__(self) -> None:
        import re

        from sonodiff.core import SAMPLERS, SCHEDULES

        if self.guide and not re.fullmatch(r"step_\d{8}", self.guide):
            raise ValueError(f"demo.guide={self.guide!r} must name a checkpoint of the run, e.g. 'step_00001450' "
                             "(or be empty: classifier-free guidance)")

        _check_name("demo.sampler", self.sampler, SAMPLERS, "sampler")
        _check_name("demo.schedule", self.schedule, SCHEDULES, "schedule")
        _check_sampler_options("demo.sampler_options", self.sampler, self.sampler_options)
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise ValueError(f"demo.cfg_rescale (guidance rescale phi) must be in [0, 1], got {self.cfg_rescale}")
        if self.steps < 1:
            raise ValueError(f"demo.steps must be >= 1, got {self.steps}")
        gi = self.guidance_interval
        if gi is not None and not 0.0 <= gi[0] < gi[1]:
            raise ValueError(f"demo.guidance_interval must be [lo, hi] noise levels with 0 <= lo < hi, got {list(gi)}")
        if self.max_window_seconds < 0 or self.seconds < 0:
            raise ValueError(f"demo.seconds and demo.max_window_seconds must be >= 0 (0 = data.seconds), got "
                             f"{self.seconds}, {self.max_window_seconds}")


@dataclass(frozen=True)
class VocoderConfig:
    """The ``task = "vocoder"`` recipe section: a GAN vocoder (:class:`sonodiff.audio.neural_vocoder.NeuralVocoder`)
    trained on waveform crops of ``data.root`` (``data.seconds`` long) and their log-mels under the recipe's
    ``codec`` settings (a mel codec: the vocoder voices exactly the features that codec decodes to).

    Losses (HiFi-GAN / Vocos): ``mel_weight`` x mel L1 + ``stft_weight`` x multi-resolution STFT loss, and after
    ``warmup_steps`` reconstruction-only steps also ``adv_weight`` x the adversarial loss (``adversarial``: hinge
    or least squares) of the multi-period and multi-resolution discriminators + ``fm_weight`` x their feature
    matching loss. The discriminators step first at each adversarial step, with lr ``optim.lr * d_lr_ratio``.
    """

    generator: dict = _field(default_factory=dict)  # NeuralVocoderConfig architecture overrides (dim, num_layers, ...)
    discriminator: dict = _field(default_factory=dict)  # DiscriminatorConfig overrides
    adversarial: Literal["hinge", "lsgan"] = "hinge"
    warmup_steps: int = 0
    mel_weight: float = 45.0
    stft_weight: float = 1.0
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    d_lr_ratio: float = 1.0
    demo_clips: int = 4  # validation clips resynthesised at each demo

    def __post_init__(self) -> None:
        for name in ("mel_weight", "stft_weight", "adv_weight", "fm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"vocoder.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.d_lr_ratio <= 0 or self.demo_clips < 0:
            raise ValueError(f"need vocoder.warmup_steps >= 0, vocoder.d_lr_ratio > 0 and vocoder.demo_clips >= 0; got "
                             f"{self.warmup_steps}, {self.d_lr_ratio}, {self.demo_clips}")


@dataclass(frozen=True)
class ContrastiveConfig:
    """The ``task = "contrastive"`` recipe section: the in-house CLAP (:class:`sonodiff.eval.clap.ClapNet`) trained
    with symmetric InfoNCE on (clip, ``text_field``) pairs of ``data.root``. Audio features are natural-log mels at
    the recipe's ``codec.options`` (a mel codec); each example is a random crop of ``data.seconds`` (shorter clips
    padded with silence) at a random gain in +-``gain_db``. ``model``: :class:`~sonodiff.eval.clap.ClapConfig`
    architecture overrides (width, embed_dim, text_hidden, init_temperature, max_logit_scale)."""

    model: dict = _field(default_factory=dict)
    text_field: Literal["caption", "label", "transcript"] = "caption"
    gain_db: float = 6.0
    retrieval_pool: int = 500  # clips of the validation split scored for recall@k at each validation

    def __post_init__(self) -> None:
        if self.gain_db < 0 or self.retrieval_pool < 0:
            raise ValueError(f"contrastive.gain_db and contrastive.retrieval_pool must be >= 0, got {self.gain_db}, "
                             f"{self.retrieval_pool}")


@dataclass(frozen=True)
class AutoencoderConfig:
    """The ``task = "autoencoder"`` recipe section: a mel VAE (:class:`sonodiff.nn.autoencoder.MelAutoencoder`)
    trained on the recipe's mel codec features; the ``latent`` codec loads its export. ``model``: architecture
    overrides (channels, blocks, latent_channels, groups; n_mels and in_channels come from the codec).
    ``kl_weight``: weight of the KL term per latent element (small: the latent is rescaled to unit variance from
    data statistics anyway, so the KL only keeps it smooth)."""

    model: dict = _field(default_factory=dict)
    kl_weight: float = 1e-4

    def __post_init__(self) -> None:
        if not self.kl_weight >= 0:
            raise ValueError(f"autoencoder.kl_weight must be >= 0, got {self.kl_weight}")


@dataclass(frozen=True)
class Config:
    name: str = "run"
    task: str = "diffusion"  # a key of sonodiff.training.tasks.TASKS: what this recipe trains
    data: DataConfig = _field(default_factory=DataConfig)
    codec: CodecConfig = _field(default_factory=CodecConfig)
    model: ModelConfig = _field(default_factory=ModelConfig)
    conditioning: ConditioningConfig = _field(default_factory=ConditioningConfig)
    optim: OptimConfig = _field(default_factory=OptimConfig)
    train: TrainConfig = _field(default_factory=TrainConfig)
    demo: DemoConfig = _field(default_factory=DemoConfig)
    vocoder: VocoderConfig = _field(default_factory=VocoderConfig)
    contrastive: ContrastiveConfig = _field(default_factory=ContrastiveConfig)
    autoencoder: AutoencoderConfig = _field(default_factory=AutoencoderConfig)

    def __post_init__(self) -> None:
        from sonodiff.core.schedules import model_sigmas
        from sonodiff.training.tasks import TASKS

        _check_name("task", self.task, TASKS, "training task")
        if self.demo.guide:
            g = int(self.demo.guide[5:])
            if not 0 < g < self.train.steps or g % self.train.checkpoint_every:
                raise ValueError(f"demo.guide={self.demo.guide!r}: the run writes checkpoints every "
                                 f"train.checkpoint_every={self.train.checkpoint_every} steps up to train.steps="
                                 f"{self.train.steps}; the guide must be one of them before the last")
        try:  # the demo grid over the model's noise range: schedule options are checked by building it
            model_sigmas(self.demo.schedule, self.demo.steps, self.model.sigma_min, self.model.sigma_max,
                         **self.demo.schedule_options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"demo.schedule={self.demo.schedule!r} with demo.schedule_options "
                             f"{self.demo.schedule_options}: {e}") from None

    def to_dict(self) -> dict:
        return to_dict(self)


def sampling_defaults(config: dict) -> dict:
    """The ``sampling`` section of an exported model's config.json from a run's config (``Config.to_dict()``):
    the demo settings over the model's noise range, the defaults of :class:`sonodiff.pipelines.Pipeline`."""
    d, m = config["demo"], config["model"]
    return {"sampler": d["sampler"], "sampler_options": dict(d.get("sampler_options", {})),
            "schedule": d["schedule"], "schedule_options": dict(d.get("schedule_options", {})),
            "num_steps": d["steps"], "guidance_scale": d["guidance_scale"], "cfg_rescale": d.get("cfg_rescale", 0.0),
            "guidance_interval": list(d["guidance_interval"]) if d.get("guidance_interval") else None,
            **({"guide": "guide"} if d.get("guide") else {}),
            "sigma_min": m["sigma_min"], "sigma_max": m["sigma_max"]}


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A :class:`Config` from a TOML file path (or a dict) with ``key.sub=value`` overrides applied."""
    data = source if isinstance(source, dict) else load_toml(source)
    data = apply_overrides(data, list(overrides), Config)
    cfg = from_dict(Config, data)
    if not cfg.data.root:
        raise ConfigError("data.root is empty: point it at a dataset folder (in the recipe or --set data.root=DIR)")
    return cfg
