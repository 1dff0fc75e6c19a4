"""Audio front-end: file I/O, resampling, normalisation, log-mel features, codecs and vocoders.

Shapes: a single signal is ``[C, T]``, a batch ``[B, C, T]``; sample rates are in Hz and travel with
the audio. Importing this package is light (torchaudio is imported inside the functions that use it).
"""

from sonodiff.audio.codecs import (
    CODECS,
    Codec,
    ImageCodec,
    ImageCodecConfig,
    MelCodec,
    MelCodecConfig,
    WaveformCodec,
    WaveformCodecConfig,
    load_codec,
    make_codec,
)
from sonodiff.audio.features import MelConfig, log_mel, mel_filterbank, mel_frequencies, stft_magnitude
from sonodiff.audio.io import (
    AUDIO_EXTENSIONS,
    RESAMPLE_QUALITY,
    apply_channel_policy,
    load_audio,
    loudness,
    loudness_normalize,
    peak_normalize,
    resample,
    rms_normalize,
    save_audio,
    silence_bounds,
    trim_silence,
)
from sonodiff.audio.vocoder import GriffinLimConfig, GriffinLimVocoder, mel_to_linear

__all__ = [
    "AUDIO_EXTENSIONS",
    "CODECS",
    "RESAMPLE_QUALITY",
    "Codec",
    "GriffinLimConfig",
    "GriffinLimVocoder",
    "ImageCodec",
    "ImageCodecConfig",
    "MelCodec",
    "MelCodecConfig",
    "MelConfig",
    "WaveformCodec",
    "WaveformCodecConfig",
    "apply_channel_policy",
    "load_audio",
    "load_codec",
    "log_mel",
    "loudness",
    "loudness_normalize",
    "make_codec",
    "mel_filterbank",
    "mel_frequencies",
    "mel_to_linear",
    "peak_normalize",
    "resample",
    "rms_normalize",
    "save_audio",
    "silence_bounds",
    "stft_magnitude",
    "trim_silence",
]
