"""VOCODERS: every kind loads and voices a codec's log-mels; a vocoder of other mel settings is a clear error;
SpeechT5HifiGan from a tiny local checkpoint, with the natural-log -> log10 mapping checked against
transformers' own SpeechT5 feature extractor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sonodiff.audio.features import MelConfig, log_mel
from sonodiff.models.vocoders import (
    SPEECHT5_MEL,
    VOCODERS,
    check_vocoder_matches,
    load_vocoder,
    save_vocoder_dir,
    wrap_speecht5_hifigan,
)

MEL8K = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, f_min=20.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tone(sr=8000, seconds=0.5, f=440.0):
    t = torch.arange(int(sr * seconds)) / sr
    return 0.3 * torch.sin(2 * math.pi * f * t)


def _neural_dir(tmp_path, mel=MEL8K, seed=0):
    from sonodiff.audio.neural_vocoder import NeuralVocoder, NeuralVocoderConfig

    torch.manual_seed(seed)
    cfg = NeuralVocoderConfig.from_mel_config(mel, dim=16, intermediate_dim=32, num_layers=1)
    net = NeuralVocoder(cfg)
    return save_vocoder_dir(tmp_path / f"neural{seed}", kind="neural", mel=mel, config=cfg.to_dict(),
                            state=net.state_dict(), source={"name": "test"}), net


def _tiny_speecht5(tmp_path):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    cfg = SpeechT5HifiGanConfig(model_in_dim=80, sampling_rate=16000, upsample_initial_channel=16,
                                upsample_rates=[4, 4, 4, 4], upsample_kernel_sizes=[8, 8, 8, 8],
                                resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])
    model = SpeechT5HifiGan(cfg).eval()
    model.save_pretrained(tmp_path / "hifigan")
    return tmp_path / "hifigan", model


def test_every_registered_kind_voices_log_mels(tmp_path):
    audio = _tone()
    lm = log_mel(audio, MEL8K)[None, None]  # [B=1, C=1, n_mels, frames], as a mel codec decodes
    n = audio.shape[-1]
    gl = load_vocoder("griffin_lim", expect=MEL8K)
    d, net = _neural_dir(tmp_path)
    neural = load_vocoder(d, expect=MEL8K)
    with torch.no_grad():
        want = net(lm[:, 0], length=n)[:, None]
    got = neural(lm, length=n)
    assert got.shape == (1, 1, n) and torch.equal(got, want)  # the saved weights, bit for bit
    g = gl(lm, length=n)
    assert g.shape == (1, 1, n) and g.abs().max() > 0.05
    tdir, model = _tiny_speecht5(tmp_path)
    st = load_vocoder(wrap_speecht5_hifigan(tdir, tmp_path / "st5"), expect=SPEECHT5_MEL)
    a16 = _tone(16000, 0.5)
    lm16 = log_mel(a16, SPEECHT5_MEL)[None, None]
    out = st(lm16, length=a16.shape[-1])
    with torch.no_grad():
        ref = model((lm16[0, 0] / math.log(10)).T[None])[0][: a16.shape[-1]]
    assert out.shape == (1, 1, a16.shape[-1])
    torch.testing.assert_close(out[0, 0], ref)
    assert set(VOCODERS) == {"griffin_lim", "neural", "speecht5_hifigan"}


def test_speecht5_mapping_matches_transformers_feature_extractor():
    """Our natural-log mel at SpeechT5's settings, divided by ln 10, is what SpeechT5's feature extractor feeds
    its vocoder (log10 mel, frames first)."""
    from transformers import SpeechT5FeatureExtractor

    fe = SpeechT5FeatureExtractor()
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    theirs = fe(audio_target=x, sampling_rate=16000, return_tensors="pt")["input_values"][0]
    from sonodiff.models.vocoders import _SpeechT5

    ours = _SpeechT5.to_log10(log_mel(torch.from_numpy(x), SPEECHT5_MEL)).T
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_a_vocoder_of_other_mel_settings_is_refused_naming_both(tmp_path):
    d, _ = _neural_dir(tmp_path)
    other = MelConfig(sample_rate=16000, n_fft=256, hop_length=64, n_mels=24, f_min=20.0)
    with pytest.raises(ValueError, match=r"sample_rate: vocoder 8000, model 16000.*n_mels: vocoder 16, model 24"):
        load_vocoder(d, expect=other)
    with pytest.raises(ValueError, match="hop_length: vocoder 256, model 64"):
        check_vocoder_matches(SPEECHT5_MEL.__class__(sample_rate=8000, n_fft=256, hop_length=256, n_mels=16,
                                                     f_min=20.0), MEL8K, "x")
    tdir, _ = _tiny_speecht5(tmp_path)
    with pytest.raises(ValueError, match="n_mels: vocoder 80, model 16"):
        load_vocoder(wrap_speecht5_hifigan(tdir, tmp_path / "st5"), expect=MEL8K)


def test_bad_vocoder_names_and_directories_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'griffin_lim', a shipped vocoder"):
        load_vocoder("no_such_vocoder", expect=MEL8K)
    (tmp_path / "notvoc").mkdir()
    (tmp_path / "notvoc" / "config.json").write_text(json.dumps({"format": "sonodiff-model", "model": {}}))
    with pytest.raises(ValueError, match="is not a vocoder model directory"):
        load_vocoder(tmp_path / "notvoc", expect=MEL8K)
    d, _ = _neural_dir(tmp_path)
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_vocoder(d, expect=MEL8K)
    with pytest.raises(ValueError, match="needs the mel settings"):
        load_vocoder("griffin_lim")


def test_pipeline_takes_the_vocoder_from_the_model_directory(tmp_path):
    """A mel model's ``audio.vocoder`` chooses its vocoder (a path relative to the model directory here);
    ``vocoder="griffin_lim"`` overrides it; a mismatched vocoder is an error at load time."""
    import shutil

    from sonodiff.pipelines import Pipeline
    from tests.pipelines.conftest import make_model_dir

    m = make_model_dir(tmp_path / "m")  # mel codec: 8 kHz, n_fft 256, hop 64, 16 bins, f_min 0
    from sonodiff.audio.codecs import load_codec

    mel = load_codec(m / "codec").config
    mc = MelConfig(**{k: getattr(mel, k) for k in MelConfig.__dataclass_fields__})
    d, net = _neural_dir(tmp_path, mel=mc)
    shutil.copytree(d, m / "vocoder")
    cfg = json.loads((m / "config.json").read_text())
    cfg["audio"]["vocoder"] = "vocoder"
    (m / "config.json").write_text(json.dumps(cfg))
    pipe = Pipeline.from_pretrained(m)
    assert pipe.vocoder.name.endswith("vocoder")
    out = pipe(["high"], seeds=[0])
    with torch.no_grad():
        want = net(pipe.codec.decode(out.features)[:, 0], length=out.audio.shape[-1])
    torch.testing.assert_close(out.audio[:, 0], want)
    gl = Pipeline.from_pretrained(m, vocoder="griffin_lim")
    assert gl.vocoder.name == "griffin_lim"
    assert not torch.allclose(gl(["high"], seeds=[0]).audio, out.audio)
    bad, _ = _neural_dir(tmp_path, mel=MEL8K, seed=1)  # f_min 20 instead of the model's
    with pytest.raises(ValueError, match="f_min"):
        pipe.set_vocoder(bad)


def test_resynth_cli_writes_the_vocoded_file_and_refuses_bad_input(tmp_path):
    import soundfile as sf

    from sonodiff.cli import main

    d, net = _neural_dir(tmp_path)
    wav = tmp_path / "in.wav"
    sf.write(wav, _tone().numpy(), 8000)
    out = tmp_path / "out.wav"
    assert main(["resynth", str(wav), "--vocoder", str(d), "--out", str(out)]) == 0
    y, sr = sf.read(out)
    assert sr == 8000 and len(y) == 4000
    with torch.no_grad():
        want = net(log_mel(_tone(), MEL8K)[None], length=4000)[0].numpy()
    assert np.abs(y - want).max() < 2e-4  # PCM_16
    assert json.loads(out.with_suffix(".json").read_text())["vocoder"] == str(d)
    # another rate: refused without --resample (and nothing written), resampled with it
    sf.write(tmp_path / "in16.wav", _tone(16000).numpy(), 16000)
    bad = tmp_path / "bad.wav"
    assert main(["resynth", str(tmp_path / "in16.wav"), "--vocoder", str(d), "--out", str(bad)]) == 2
    assert not bad.exists()
    assert main(["resynth", str(tmp_path / "in16.wav"), "--vocoder", str(d), "--resample", "--out", str(bad)]) == 0
    assert sf.info(str(bad)).samplerate == 8000
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert main(["resynth", str(tmp_path / "junk.wav"), "--vocoder", str(d), "--out", str(tmp_path / "j.wav")]) == 2
    assert main(["resynth", str(tmp_path / "missing.wav"), "--vocoder", str(d), "--out", str(tmp_path / "m.wav")]) == 2
    assert main(["resynth", str(wav), "--vocoder", "griffin_lim", "--out", str(tmp_path / "g.wav")]) == 2
    assert not any((tmp_path / n).exists() for n in ("j.wav", "m.wav", "g.wav"))
