"""The contrastive task (in-house CLAP) on the shared engine: it learns, resumes exactly, exports a CLAP model
directory that load_clap reads, and recipes it cannot train are clear errors."""

from __future__ import annotations

import pytest
import torch

from sonodiff.training.config import load_config
from sonodiff.training.logging import read_metrics
from sonodiff.training.loop import train

QUIET = lambda *a, **k: None  # noqa: E731


def _cfg(root, steps=10, extra=()):
    return load_config({"task": "contrastive"}, [
        f"data.root={root}", "data.seconds=0.25", "data.valid_split=", f"train.steps={steps}",
        "train.batch_size=8", "train.progress=false", "train.tensorboard=false", "train.threads=1",
        "train.deterministic=true", "train.log_every=1", "train.checkpoint_every=5", "optim.warmup_steps=0",
        "optim.lr=3e-3", "train.ema_half_life=0",
        "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}",
        "contrastive.model={width = 8, embed_dim = 16, text_hidden = 32}", *extra])


def test_clap_learns_the_captions_and_exports(tones_dir, tmp_path):
    import soundfile as sf

    from sonodiff.eval.clap import InHouseClap, clap_score, load_clap, zero_shot_accuracy
    from sonodiff.training.export import export_run

    res = train(_cfg(tones_dir, steps=40), tmp_path / "run", log=QUIET)
    assert res.step == 40 and res.skipped_steps == 0
    rows = [r for r in read_metrics(tmp_path / "run") if "clap/in_batch_top1" in r]
    first = sum(r["clap/in_batch_top1"] for r in rows[:5]) / 5
    last = sum(r["clap/in_batch_top1"] for r in rows[-5:]) / 5
    assert last > first and last > 0.85, (first, last)
    clap = load_clap(export_run(tmp_path / "run", tmp_path / "clap"))
    assert isinstance(clap, InHouseClap)
    files = sorted(tones_dir.glob("*.wav"))
    import json

    meta = {json.loads(l)["path"]: json.loads(l) for l in (tones_dir / "metadata.jsonl").read_text().splitlines()}
    audio = [sf.read(f, dtype="float32")[0] for f in files]
    labels = [0 if meta[f.name]["label"] == "low" else 1 for f in files]
    a = clap.embed_audio(audio, 8000)
    t = clap.embed_text(["a low tone", "a high tone"])
    assert a.shape == (24, 16) and torch.allclose(a.norm(dim=1), torch.ones(24), atol=1e-5)
    assert zero_shot_accuracy(a, t, labels) >= 0.9
    # CLAP score: own captions score above swapped ones, and it is invariant to the order of the clips
    caps = [meta[f.name]["caption"] for f in files]
    swapped = ["a high tone" if c == "a low tone" else "a low tone" for c in caps]
    s = clap_score(clap, audio, 8000, caps)
    assert s.mean() > clap_score(clap, audio, 8000, swapped).mean() + 0.2
    perm = list(reversed(range(24)))
    s2 = clap_score(clap, [audio[i] for i in perm], 8000, [caps[i] for i in perm])
    assert torch.allclose(s2, s[perm], atol=1e-5)
    # the same clip at another sample rate is resampled, not misread
    import torchaudio

    up = torchaudio.functional.resample(torch.as_tensor(audio[0]), 8000, 16000)
    assert torch.nn.functional.cosine_similarity(clap.embed_audio([up.numpy()], 16000), a[:1]).item() > 0.95


def test_clap_resume_is_exact(tones_dir, tmp_path):
    from tests.training.conftest import assert_resumes_exactly

    assert_resumes_exactly(lambda: _cfg(tones_dir, steps=10), tmp_path)


def test_clap_recipes_that_cannot_train_are_clear_errors(tones_dir, tmp_path):
    with pytest.raises(ValueError, match=r"embeds log-mels \(codec 'mel'\) or images \(codec 'image'\), got codec.name='waveform'"):
        train(_cfg(tones_dir, extra=["codec.name=waveform", "codec.options={sample_rate = 8000}"]), tmp_path / "a",
              log=QUIET)
    with pytest.raises(ValueError, match="contrastive.model sets \\['sample_rate'\\]"):
        train(_cfg(tones_dir, extra=["contrastive.model={sample_rate = 16000}"]), tmp_path / "b", log=QUIET)
    with pytest.raises(ValueError, match="no readable audio with a 'transcript'"):
        train(_cfg(tones_dir, extra=["contrastive.text_field=transcript"]), tmp_path / "c", log=QUIET)
