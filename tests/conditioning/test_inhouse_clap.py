"""The in-house CLAP as a conditioner (`clap_inhouse`): text and audio prompts land in the CLAP's space, a
diffusion model trains on it through the engine, and the exported model generates from text or from a sound."""

from __future__ import annotations

import pytest
import torch

from sonodiff.conditioning.registry import from_config
from tests.training.conftest import tones_dir  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    from sonodiff.eval.clap import ClapConfig, ClapNet, save_clap_dir

    torch.manual_seed(0)
    net = ClapNet(ClapConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, f_min=0.0, width=8, embed_dim=16,
                             text_hidden=32))
    return save_clap_dir(tmp_path_factory.mktemp("clap") / "tiny", config=net.config, state=net.state_dict(),
                         source={"name": "tiny"})


def test_text_and_audio_prompts_match_the_clap_embeddings(clap_dir):
    from sonodiff.eval.clap import load_clap

    cond = from_config({"type": "clap_inhouse", "path": str(clap_dir)})
    clap = load_clap(clap_dir)
    texts = ["a high tone", "a low tone"]
    got = cond.encode_inputs(texts).pooled
    torch.testing.assert_close(got, clap.embed_text(texts), atol=1e-5, rtol=1e-5)
    assert cond.pooled_dim == 16 and cond.token_dim == 0 and cond.weights() == {}
    t = torch.arange(4000) / 8000
    clips = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (300.0, 1200.0)])
    a = cond.encode_inputs(("audio", clips, 8000)).pooled
    torch.testing.assert_close(a, clap.embed_audio(clips, 8000), atol=1e-5, rtol=1e-5)
    # an audio prompt at another rate is resampled to the CLAP's
    up = torch.nn.functional.interpolate(clips[:, None], scale_factor=2, mode="linear")[:, 0]
    assert torch.nn.functional.cosine_similarity(cond.encode_inputs(("audio", up, 16000)).pooled, a).min() > 0.9
    with pytest.raises(ValueError, match="needs path="):
        from_config({"type": "clap_inhouse"})
    with pytest.raises(ValueError, match="'text' or 'audio'"):
        from_config({"type": "clap_inhouse", "path": str(clap_dir), "input": "image"})


def test_a_diffusion_model_trains_on_clap_text_and_generates_from_a_sound(clap_dir, tones_dir, tmp_path):
    from sonodiff.pipelines import Pipeline
    from sonodiff.training.config import load_config
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train
    from tests.training.conftest import small_overrides

    cfg = load_config("recipes/tiny_debug.toml", small_overrides(tones_dir, run_steps=6, extra=[
        "conditioning.type=clap_inhouse", f'conditioning.options={{path = "{clap_dir}"}}', "conditioning.field=caption",
        "conditioning.dropout=0.1", "data.valid_split=", "demo.every=0", "demo.steps=2",
        "demo.prompts=[\"a high tone\"]"]))
    res = train(cfg, tmp_path / "run", log=lambda *a, **k: None)
    assert res.step == 6
    pipe = Pipeline.from_pretrained(export_run(tmp_path / "run", tmp_path / "model"))
    out = pipe(["a high tone"], seeds=[0], num_steps=4)
    assert out.audio.shape[0] == 1 and torch.isfinite(out.audio).all()
    # the same text-trained model driven by a sound: the clip's CLAP audio embedding takes the text's place
    t = torch.arange(4000) / 8000
    sound = ("audio", 0.3 * torch.sin(2 * torch.pi * 1200 * t), 8000)
    by_sound = pipe([sound], seeds=[0], num_steps=4)
    assert by_sound.audio.shape == out.audio.shape and not torch.equal(by_sound.audio, out.audio)
