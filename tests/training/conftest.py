import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session")
def tones_dir(tmp_path_factory):
    """A real folder of 24 WAV files: windowed sine tones at random pitches, with captions in metadata.jsonl."""
    import json

    d = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        f = float(rng.uniform(200, 1500))
        t = np.arange(4000) / 8000
        x = 0.4 * np.sin(2 * np.pi * f * t) * np.hanning(4000) ** 0.3
        name = f"tone_{i:02d}.wav"
        sf.write(d / name, x.astype(np.float32), 8000)
        rows.append({"path": name, "caption": "a high tone" if f > 850 else "a low tone",
                     "label": "high" if f > 850 else "low"})
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def small_overrides(root, run_steps=12, batch=4, extra=()):
    return [f"data.root={root}", "data.seconds=0.25", f"train.steps={run_steps}", f"train.batch_size={batch}",
            "train.progress=false", "train.tensorboard=false", "train.threads=1", "train.deterministic=true",
            "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}", *extra]


def assert_resumes_exactly(make_cfg, tmp_path, steps=10, last_ckpt="step_00000010", first_kept=5):
    """Train ``make_cfg()`` to ``steps``; copy the run, drop its last checkpoint and resume: the resumed losses and
    the live and EMA weights equal the uninterrupted run's exactly. Returns both last checkpoints."""
    import shutil

    import torch

    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint
    from sonodiff.training.loop import train

    quiet = lambda *a, **k: None  # noqa: E731
    ref = train(make_cfg(), tmp_path / "ref", log=quiet)
    shutil.copytree(tmp_path / "ref", tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "checkpoints" / last_ckpt)
    (tmp_path / "again" / "checkpoints" / "latest").unlink(missing_ok=True)
    more = train(make_cfg(), tmp_path / "again", log=quiet)
    assert list(more.losses) == list(ref.losses[first_kept:])
    a = load_checkpoint(latest_checkpoint(tmp_path / "ref" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "again" / "checkpoints"))
    for sa, sb in zip(a[:2], b[:2]):  # live weights and EMA
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    return a, b
