"""The models that ship with sonodiff: present, small, documented, loadable on CPU, and they make sound."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from sonodiff.models import MODELS_DIR, default_model, list_models, resolve_model
from sonodiff.pipelines import Pipeline

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("fsdd_digits_mel", "corpus_sfx_mel", "corpus_sfx_latent")


def test_registry_lists_the_shipped_models_and_the_text_model_is_the_default():
    models = list_models()
    assert set(SHIPPED) <= set(models)
    assert default_model() == "corpus_sfx_latent"
    assert models["fsdd_digits_mel"]["conditioning"] == "class_label"
    assert models["fsdd_digits_mel"]["labels"] == [str(d) for d in range(10)]
    assert models["corpus_sfx_mel"]["conditioning"] == "sentence"
    assert models["corpus_sfx_latent"]["conditioning"] == "sentence"
    assert json.loads((MODELS_DIR / "corpus_sfx_latent" / "config.json").read_text())["audio"]["codec"] == "latent"
    # the latent model shares the shipped autoencoder (no second copy in the package), checked by weights hash
    from sonodiff.audio.codecs import load_codec

    codec = load_codec(MODELS_DIR / "corpus_sfx_latent" / "codec")
    assert codec.directory.resolve() == (MODELS_DIR / "ae_sfx").resolve()
    assert not (MODELS_DIR / "corpus_sfx_latent" / "codec" / "autoencoder").exists()
    assert resolve_model("fsdd_digits_mel") == MODELS_DIR / "fsdd_digits_mel"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_and_has_a_model_card(name):
    d = MODELS_DIR / name
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert size <= 30 * 2**20, f"{name} is {size / 2**20:.1f} MB (limit 30 MB)"
    card = (d / "MODEL_CARD.md").read_text()
    for needle in ("Data", "Training", "Metrics", "Licence", "accuracy", "Frechet"):
        assert needle in card, f"{name}/MODEL_CARD.md lacks {needle!r}"


@pytest.mark.parametrize("name,prompt", [("fsdd_digits_mel", "7"), ("corpus_sfx_mel", "a wailing siren"),
                                               ("corpus_sfx_latent", "a wailing siren")])
def test_shipped_model_generates_reproducible_non_silent_audio(name, prompt):
    pipe = Pipeline.from_pretrained(name)
    a = pipe([prompt, prompt], seeds=[3, 4], num_steps=8)
    b = pipe([prompt], seeds=[4], num_steps=8)
    n = int(round(pipe.train_seconds * pipe.sample_rate))
    assert a.audio.shape == (2, 1, n) and torch.isfinite(a.audio).all()
    # sample k depends only on (prompt k, seed k), up to batch-size-dependent float rounding in the network
    torch.testing.assert_close(a.features[1:2], b.features, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(a.features[0], a.features[1], atol=1e-1)
    rms = a.audio.pow(2).mean(-1).sqrt()
    assert (rms > 1e-3).all()


def test_generate_cli_uses_the_shipped_text_model_without_model_flag(tmp_path):
    out = tmp_path / "siren.wav"
    r = subprocess.run([sys.executable, "-m", "sonodiff", "generate", "a wailing siren", "--steps", "6",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    audio, sr = sf.read(out)
    side = json.loads(out.with_suffix(".json").read_text())
    assert sr == 16000 and len(audio) == 64000 and 0.01 < abs(audio).max() <= 1.0  # the model's 4 s
    assert side["model_name"] == "corpus_sfx_latent" and side["prompt"] == "a wailing siren" and side["steps"] == 6


def test_shipped_clap_loads_and_embeds_in_one_space():
    import torch

    from sonodiff.eval.clap import InHouseClap, load_clap
    from sonodiff.models import MODELS_DIR, list_models

    assert list_models("clap")["clap_corpus"]["embed_dim"] == 256
    assert list_models("clap")["clap_corpus"]["modality"] == "audio"
    assert list_models("clap")["clip_mnist"]["image_size"] == [1, 28, 28]  # an image CLIP lists its image size
    assert sum(f.stat().st_size for f in (MODELS_DIR / "clap_corpus").iterdir()) < 30e6
    clap = load_clap("clap_corpus")
    assert isinstance(clap, InHouseClap) and clap.sample_rate == 16000
    t = clap.embed_text(["a wailing siren", "a slowly wailing siren", "a piano melody in C major, 90 bpm"])
    assert torch.allclose(t.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(t[0] @ t[1]) > float(t[0] @ t[2])
    a = clap.embed_audio([0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))], 16000)
    assert a.shape == (1, 256) and torch.isfinite(a).all()
