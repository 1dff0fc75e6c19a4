"""The README's Python snippets run as written (in a scratch folder with a small folder of real audio)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_snippet_runs(i, tmp_path):
    code = BLOCKS[i]
    if "my_clips" in code:
        clips = tmp_path / "my_clips"
        clips.mkdir()
        rng = np.random.default_rng(0)
        for k in range(16):
            t = np.arange(4000) / 8000
            sf.write(clips / f"c{k}.wav", (0.4 * np.sin(2 * np.pi * rng.uniform(200, 1500) * t)).astype(np.float32), 8000)
        (tmp_path / "recipes").symlink_to(REPO / "recipes")
        code = code.replace('"train.steps=100"', '"train.steps=20", "train.progress=false", "demo.steps=4"')
        code = code.replace("num_steps=25", "num_steps=4").replace("duration_s=10.0", "duration_s=1.5")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, f"README snippet {i} failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
