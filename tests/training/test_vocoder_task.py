"""The vocoder task on the shared engine: warm-up then GAN phases, exact resume with two optimizers, export to a
vocoder model directory that the VOCODERS loader reads, and clear errors for recipes it cannot train."""

from __future__ import annotations

import pytest
import torch

from sonodiff.training.config import load_config
from sonodiff.training.logging import read_metrics
from sonodiff.training.loop import train

QUIET = lambda *a, **k: None  # noqa: E731


def _cfg(root, steps=10, extra=()):
    return load_config({"task": "vocoder"}, [
        f"data.root={root}", "data.seconds=0.25", "data.valid_split=valid", f"train.steps={steps}",
        "train.batch_size=4", "train.progress=false", "train.tensorboard=false", "train.threads=1",
        "train.deterministic=true", "train.log_every=1", "train.checkpoint_every=5", "train.valid_every=5",
        "train.valid_batches=1", "optim.warmup_steps=0", "optim.lr=2e-3",
        "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}",
        "vocoder.generator={dim = 16, intermediate_dim = 32, num_layers = 1}",
        "vocoder.discriminator={mpd_channels = [4, 8], mrd_channels = 4, mrd_layers = 2, periods = [2, 3]}",
        "vocoder.warmup_steps=4", "vocoder.demo_clips=1", *extra])


def test_vocoder_trains_through_the_engine_and_exports(tones_dir, tmp_path):
    from sonodiff.audio.features import log_mel
    from sonodiff.models.vocoders import load_vocoder
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint
    from sonodiff.training.export import export_run

    res = train(_cfg(tones_dir, steps=10), tmp_path / "run", log=QUIET)
    assert res.step == 10 and res.skipped_steps == 0
    rows = {r["step"]: r for r in read_metrics(tmp_path / "run") if "loss" in r}
    # reconstruction only during the warm-up, then both phases with the adversarial terms
    assert "loss/discriminator" not in rows[4] and "vocoder/g_adv" not in rows[4]
    assert {"loss/discriminator", "vocoder/g_adv", "vocoder/feature_matching", "vocoder/d_loss_real"} <= set(rows[5])
    assert any("valid_loss" in r for r in read_metrics(tmp_path / "run"))
    assert list((tmp_path / "run" / "demos" / "step_00000010").glob("clip0_vocoder.wav"))
    out = export_run(tmp_path / "run", tmp_path / "voc")
    voc = load_vocoder(out)
    _, ema, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert set(ema) == set(voc.net.state_dict())  # the generator's EMA, nothing of the discriminators
    assert all(torch.equal(voc.net.state_dict()[k], ema[k]) for k in ema)
    audio = torch.sin(torch.arange(2000) / 8000 * 2 * torch.pi * 500) * 0.3
    y = voc(log_mel(audio, voc.mel_config)[None, None], length=2000)
    assert y.shape == (1, 1, 2000) and torch.isfinite(y).all()


def test_vocoder_resume_is_exact_with_two_optimizers(tones_dir, tmp_path):
    from tests.training.conftest import assert_resumes_exactly

    a, _ = assert_resumes_exactly(lambda: _cfg(tones_dir, steps=10), tmp_path)
    assert set(a[2]["optimizers"]) == {"discriminator", "generator"}


def test_vocoder_recipes_that_cannot_train_are_clear_errors(tones_dir, tmp_path):
    with pytest.raises(ValueError, match="codec.name must be 'mel'"):
        train(_cfg(tones_dir, extra=["codec.name=waveform", "codec.options={sample_rate = 8000}"]), tmp_path / "a",
              log=QUIET)
    with pytest.raises(ValueError, match="mel settings come from codec.options"):
        train(_cfg(tones_dir, extra=["vocoder.generator={n_mels = 80}"]), tmp_path / "b", log=QUIET)
    with pytest.raises(Exception, match="dimm"):
        train(_cfg(tones_dir, extra=["vocoder.generator={dimm = 8}"]), tmp_path / "c", log=QUIET)
    with pytest.raises(ValueError, match="at least 2 x n_fft"):
        train(_cfg(tones_dir, extra=["data.seconds=0.05"]), tmp_path / "d", log=QUIET)
    # a diffusion run directory is not resumed as a vocoder run
    diff = load_config({}, [f"data.root={tones_dir}", "data.seconds=0.25", "train.steps=1", "train.batch_size=2",
                            "train.progress=false", "train.tensorboard=false", "train.threads=1",
                            "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}"])
    train(diff, tmp_path / "e", log=QUIET)
    with pytest.raises(ValueError, match="task: run has 'diffusion', now 'vocoder'"):
        train(_cfg(tones_dir), tmp_path / "e", log=QUIET)


@pytest.mark.slow
def test_vocoder_two_process_gloo_ddp_matches_single_process(tones_dir, tmp_path):
    """Both phases under DDP (generator and discriminators wrapped separately) give the single-process losses."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sonodiff.training.logging import read_metrics

    repo = Path(__file__).resolve().parents[2]
    over = ["--set", "task=vocoder", "--set", f"data.root={tones_dir}", "--set", "data.seconds=0.25",
            "--set", "data.valid_split=", "--set", "train.steps=6", "--set", "train.batch_size=4",
            "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "train.threads=1",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=6", "--set", "optim.warmup_steps=0",
            "--set", "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}",
            "--set", "vocoder.generator={dim = 16, intermediate_dim = 32, num_layers = 1}",
            "--set", "vocoder.discriminator={mpd_channels = [4, 8], mrd_channels = 4, mrd_layers = 2, periods = [2, 3]}",
            "--set", "vocoder.warmup_steps=2", "--set", "vocoder.demo_clips=0"]
    recipe = str(repo / "recipes" / "tiny_debug.toml")
    one = subprocess.run([sys.executable, "-m", "sonodiff", "train", recipe, "--out", str(tmp_path / "one"), *over],
                         cwd=repo, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    env = {**os.environ, "SONODIFF_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "sonodiff", "train", recipe,
                          "--out", str(tmp_path / "two"), *over], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    a = {r["step"]: r for r in read_metrics(tmp_path / "one")}
    b = {r["step"]: r for r in read_metrics(tmp_path / "two")}
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for s in a:
        for k in ("loss", "vocoder/mel_l1") + (("loss/discriminator",) if s > 2 else ()):
            assert b[s][k] == pytest.approx(a[s][k], rel=1e-3), (s, k, a[s][k], b[s][k])
