"""The autoencoder task and the latent codec (issue 17, part 1): a mel VAE trains through the shared engine
(exact resume), exports to a model directory, and is a codec with weights: encode/decode, statistics fitted to unit
variance, a feature cache keyed by the weights (a retrained autoencoder never reads stale latents), model
directories that carry their autoencoder, and a latent diffusion model that trains and generates audio."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sonodiff.training.config import load_config
from sonodiff.training.logging import read_metrics
from sonodiff.training.loop import train

QUIET = lambda *a, **k: None  # noqa: E731
MEL = "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}"


def _ae_cfg(root, cache, steps=10, extra=()):
    return load_config({"task": "autoencoder"}, [
        f"data.root={root}", f"data.cache_dir={cache}", "data.seconds=0.25", "data.pad=silence",
        f"train.steps={steps}", "train.batch_size=4", "train.progress=false", "train.tensorboard=false",
        "train.threads=1", "train.deterministic=true", "train.log_every=1", "train.checkpoint_every=5",
        "train.valid_every=5", "train.valid_batches=1", "data.valid_split=", "optim.warmup_steps=0",
        "optim.lr=3e-3", MEL, "autoencoder.model={channels = [8, 16], latent_channels = 4, groups = 4}",
        "demo.every=0", *extra])


@pytest.fixture(scope="module")
def ae_export(tones_dir, tmp_path_factory):
    from sonodiff.training.export import export_run

    d = tmp_path_factory.mktemp("ae")
    res = train(_ae_cfg(tones_dir, d / "cache", steps=30), d / "run", log=QUIET)
    assert res.step == 30 and res.skipped_steps == 0
    return export_run(d / "run", d / "ae"), d


def test_autoencoder_trains_through_the_engine_and_learns(ae_export):
    _, d = ae_export
    rows = [r for r in read_metrics(d / "run") if "loss" in r]
    assert {"autoencoder/l1", "autoencoder/mse", "autoencoder/kl", "autoencoder/multires_l1"} <= set(rows[0])
    first = sum(r["autoencoder/l1"] for r in rows[:5]) / 5
    last = sum(r["autoencoder/l1"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    cfg = json.loads((ae_export[0] / "config.json").read_text())
    assert cfg["kind"] == "autoencoder" and cfg["config"]["n_mels"] == 16 and cfg["config"]["latent_channels"] == 4


def test_autoencoder_resume_is_exact(tones_dir, tmp_path):
    from tests.training.conftest import assert_resumes_exactly

    assert_resumes_exactly(lambda: _ae_cfg(tones_dir, tmp_path / "cache", steps=10), tmp_path)


def test_latent_codec_encodes_decodes_and_fits_unit_variance(ae_export, tones_dir):
    from sonodiff.audio.codecs import make_codec
    from sonodiff.audio.io import load_audio

    out, _ = ae_export
    codec = make_codec("latent", autoencoder=str(out))
    assert codec.sample_rate == 8000 and codec.factor == 2 and codec.hop_samples == 128
    assert codec.mel_config.n_mels == 16 and codec.latent_channels == 4
    audio = torch.stack([load_audio(p, sample_rate=8000)[0] for p in sorted(tones_dir.glob("*.wav"))[:6]])
    f = codec.analyze(audio)  # 4000 samples -> 63 mel frames -> padded to 64 -> 32 latent frames
    assert f.shape == (6, 4, 8, 32)
    assert torch.equal(codec.analyze(audio[:2]), f[:2])  # deterministic (the posterior mean), batch-invariant
    with pytest.raises(ValueError, match="not fitted"):
        codec.normalize(f)
    codec.fit([x for x in f])
    z = codec.normalize(f)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (z.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    logmel = codec.decode(z)
    assert logmel.shape == (6, 1, 16, 64)
    truth = codec.mel.analyze(audio)
    err = (logmel[..., :63] - truth).abs().mean()
    base = (truth - truth.mean()).abs().mean()
    assert err < 0.7 * base, (float(err), float(base))  # a trained reconstruction, far better than the mean


def test_cache_is_keyed_by_the_autoencoder_weights(ae_export, tones_dir, tmp_path):
    """Retraining the autoencoder gives another feature folder; the old folder is never read for the new weights."""
    from sonodiff.audio.codecs import make_codec
    from sonodiff.data.cache import feature_dir, prepare
    from sonodiff.training.export import export_run

    out, d = ae_export
    a = make_codec("latent", autoencoder=str(out))
    prepare(tones_dir, a, cache_dir=tmp_path / "c", log=QUIET)
    # the same run trained further: other weights, same architecture and settings
    shutil.copytree(d / "run", tmp_path / "run")
    train(_ae_cfg(tones_dir, d / "cache", steps=35), tmp_path / "run", log=QUIET)
    out2 = export_run(tmp_path / "run", tmp_path / "ae2")
    b = make_codec("latent", autoencoder=str(out2))
    assert a.config_dict()["config"] == {"autoencoder": str(out)} and a.weights_sha != b.weights_sha
    fa, fb = feature_dir(tmp_path / "c", a), feature_dir(tmp_path / "c", b)
    assert fa != fb and not fb.exists()
    prepare(tones_dir, b, cache_dir=tmp_path / "c", log=QUIET)
    from safetensors.torch import load_file

    k = sorted(json.loads((fa / "index.json").read_text())["items"])[0]
    h = json.loads((fa / "index.json").read_text())["items"][k]["hash"]
    assert json.loads((fb / "index.json").read_text())["items"][k]["hash"] == h  # the same file ...
    xa, xb = (next(iter(load_file(str(f / "items" / h[:2] / f"{h}.safetensors")).values())) for f in (fa, fb))
    assert xa.shape == xb.shape and not torch.equal(xa, xb)
    # the weights a codec folder was fitted for are checked when it is loaded
    from sonodiff.audio.codecs import load_codec

    a.fit([torch.randn(4, 8, 32)])
    a.save(tmp_path / "saved")
    shutil.rmtree(tmp_path / "saved" / "autoencoder")
    meta = json.loads((tmp_path / "saved" / "config.json").read_text())
    meta["config"]["autoencoder"] = str(out2)
    (tmp_path / "saved" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="autoencoder weights"):
        load_codec(tmp_path / "saved")


def test_bad_autoencoder_references_are_clear_errors(tmp_path, ae_export):
    from sonodiff.audio.codecs import make_codec

    with pytest.raises(ValueError, match="needs codec.options.autoencoder"):
        make_codec("latent")
    with pytest.raises(FileNotFoundError, match="neither an autoencoder model directory nor a shipped"):
        make_codec("latent", autoencoder=str(tmp_path / "nowhere"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"format": "sonodiff-model", "kind": "vocoder"}))
    with pytest.raises(ValueError, match="not an autoencoder model directory"):
        make_codec("latent", autoencoder=str(tmp_path / "m"))
    with pytest.raises(ValueError, match="trains on mel features"):
        train(_ae_cfg(tmp_path, tmp_path / "cache", extra=("codec.name=waveform", "codec.options={}")),
              tmp_path / "run", log=QUIET)


def test_latent_diffusion_trains_exports_and_generates(ae_export, tones_dir, tmp_path):
    """A diffusion model on the latent codec, end to end; the exported model directory carries its autoencoder, so
    it still loads after the autoencoder's own directory is gone."""
    from sonodiff.pipelines import Pipeline
    from sonodiff.training.export import export_run

    out, _ = ae_export
    ae = shutil.copytree(out, tmp_path / "ae_copy")
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[2] / "recipes" / "tiny_debug.toml", [
        f"data.root={tones_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.seconds=0.25", "train.steps=6",
        "train.batch_size=4", "train.progress=false", "train.tensorboard=false", "train.threads=1",
        "codec.name=latent", f"codec.options={{autoencoder = \"{ae}\"}}", "demo.every=0", "train.checkpoint_every=6",
        "conditioning.type=class_label", "conditioning.field=label", 'demo.prompts=["high", "low"]'])
    res = train(cfg, tmp_path / "run", log=QUIET)
    assert res.step == 6
    run_cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "latent-" in run_cfg["feature_dir"]
    model_dir = export_run(tmp_path / "run", tmp_path / "model")
    assert (model_dir / "codec" / "autoencoder" / "model.safetensors").is_file()
    shutil.rmtree(ae)
    pipe = Pipeline.from_pretrained(model_dir)
    assert pipe.codec.name == "latent"
    gen = pipe(["high", "low"], seeds=[0, 1], num_steps=3, duration_s=0.5)
    assert gen.audio.shape[:2] == (2, 1) and gen.audio.shape[-1] == 4000
    assert torch.isfinite(gen.audio).all()
