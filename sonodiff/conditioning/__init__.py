"""Conditioning: text encoders (transformers, local checkpoints only), CLAP audio embeddings, class labels,
numbers and timing, composition, classifier-free dropout and a text-embedding cache.

Importing this package does not import transformers; encoders import it when they are built.
"""

from sonodiff.conditioning.audio import ClapAudioConditioner, ClapAudioConfig
from sonodiff.conditioning.base import Conditioner, ConditionerConfig, masked_mean
from sonodiff.conditioning.cache import encode_cached, text_cache_key
from sonodiff.conditioning.compose import ComposedConditioner, ComposedConfig
from sonodiff.conditioning.labels import ClassLabelConditioner, ClassLabelConfig
from sonodiff.conditioning.numbers import NumberConditioner, NumberConfig, TimingConditioner, TimingConfig
from sonodiff.conditioning.registry import CONDITIONERS, from_config, load_conditioner, save_conditioner
from sonodiff.conditioning.text import (
    ClapTextConfig,
    ClapTextEncoder,
    ClipTextConfig,
    ClipTextEncoder,
    SentenceConfig,
    SentenceEncoder,
    T5Config,
    T5TextEncoder,
    TextEncoderConfig,
    minilm_path,
)

__all__ = [
    "CONDITIONERS",
    "ClapAudioConditioner",
    "ClapAudioConfig",
    "ClapTextConfig",
    "ClapTextEncoder",
    "ClassLabelConditioner",
    "ClassLabelConfig",
    "ClipTextConfig",
    "ClipTextEncoder",
    "ComposedConditioner",
    "ComposedConfig",
    "Conditioner",
    "ConditionerConfig",
    "NumberConditioner",
    "NumberConfig",
    "SentenceConfig",
    "SentenceEncoder",
    "T5Config",
    "T5TextEncoder",
    "TextEncoderConfig",
    "TimingConditioner",
    "TimingConfig",
    "encode_cached",
    "from_config",
    "load_conditioner",
    "masked_mean",
    "minilm_path",
    "save_conditioner",
    "text_cache_key",
]
