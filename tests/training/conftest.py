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
