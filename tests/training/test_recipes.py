"""Every recipe in recipes/ parses, type-checks and builds its model for its codec's example shape."""

from pathlib import Path

import pytest
import torch

from sonodiff.models.diffusion import example_shape, frames_for_seconds
from sonodiff.training.build import build_model
from sonodiff.training.config import load_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))


def test_recipes_exist_and_are_documented():
    names = {p.stem for p in RECIPES}
    assert {"tiny_debug", "fsdd_digits_mel", "corpus_sfx_mel", "corpus_music_mel", "corpus_speech_mel",
            "waveform_unet1d"} <= names
    table = (RECIPES[0].parent / "README.md").read_text()
    for n in names:
        assert f"`{n}`" in table, f"recipes/README.md does not describe {n}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds(path):
    from sonodiff.audio.codecs import make_codec

    cfg = load_config(path, ["data.root=somewhere"])
    if cfg.task == "vocoder":  # the generator the recipe trains: its mel settings are the codec's; at most 5 M
        from sonodiff.audio.discriminators import DiscriminatorConfig, Discriminators
        from sonodiff.audio.neural_vocoder import NeuralVocoder, NeuralVocoderConfig
        from sonodiff.training.tasks.vocoder import vocoder_mel_config
        from sonodiff.utils.config import from_dict

        mel = vocoder_mel_config(cfg)
        gen = NeuralVocoder(from_dict(NeuralVocoderConfig, {**NeuralVocoderConfig.from_mel_config(mel).to_dict(),
                                                            **cfg.vocoder.generator}))
        Discriminators(from_dict(DiscriminatorConfig, {"sample_rate": mel.sample_rate, **cfg.vocoder.discriminator}))
        assert gen.config.mel_config() == mel and 1e5 < gen.num_parameters() <= 5e6
        return
    if cfg.task == "contrastive":  # the CLAP / CLIP the recipe trains, for its codec's input
        from sonodiff.eval.clap import ClapNet
        from sonodiff.training.tasks.contrastive import clap_config_of

        net = ClapNet(clap_config_of(cfg))
        x = (torch.zeros(2, net.config.channels, net.config.image_height, net.config.image_width)
             if net.config.modality == "image" else torch.zeros(2, net.config.n_mels, 64))
        assert net.embed_input(x).shape == (2, net.config.embed_dim)
        return
    codec = make_codec(cfg.codec.name, **cfg.codec.options)
    shape = example_shape(codec, cfg.data.seconds)
    if codec.modality == "audio":
        assert shape[-1] == frames_for_seconds(codec, cfg.data.seconds)
    labels = [str(d) for d in range(10)] if cfg.conditioning.type == "class_label" else None
    model, spec = build_model(cfg, shape, labels)
    assert spec["network_config"]["in_channels"] == shape[0]
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 1e5 < n < 5e8
