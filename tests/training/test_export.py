"""Exports are complete and machine-independent (issue 13): every key generation reads comes from the run's
config, a re-export loads with no manual edit, and no exported config or output sidecar holds an absolute path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sonodiff.training.config import load_config

from .conftest import small_overrides

REPO = Path(__file__).resolve().parents[2]
# shipped model -> the recipe its run was trained with (its model card says so too)
SHIPPED_RECIPES = {"corpus_sfx_mel": "corpus_sfx_mel_cpu", "fsdd_digits_mel": "fsdd_digits_mel"}


def _absolute_paths(obj, where=""):
    """Every string in a JSON value that is an absolute path (or contains one), with where it is."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _absolute_paths(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _absolute_paths(v, f"{where}[{i}]")
    elif isinstance(obj, str) and (obj.startswith("/") or "/work/" in obj or "/tmp/" in obj or "/home/" in obj
                                   or (len(obj) > 2 and obj[1] == ":" and obj[2] in "\\/")):
        out.append(f"{where}={obj!r}")
    return out


@pytest.mark.parametrize("model", sorted(SHIPPED_RECIPES))
def test_reexporting_a_shipped_models_run_reproduces_its_sampling_and_audio_keys(model):
    from sonodiff.audio.codecs import load_codec
    from sonodiff.models import MODELS_DIR
    from sonodiff.training.export import model_sections

    shipped = json.loads((MODELS_DIR / model / "config.json").read_text())
    cfg = load_config(REPO / "recipes" / f"{SHIPPED_RECIPES[model]}.toml", ["data.root=unused"])
    assert cfg.name == shipped["source"]["name"]
    sections = model_sections(cfg.to_dict(), load_codec(MODELS_DIR / model / "codec"))
    assert sections["sampling"] == shipped["sampling"]
    assert sections["audio"] == shipped["audio"]


@pytest.mark.parametrize("model", sorted(SHIPPED_RECIPES))
def test_shipped_configs_hold_no_absolute_path(model):
    from sonodiff.models import MODELS_DIR

    for f in sorted((MODELS_DIR / model).rglob("*.json")):
        assert not _absolute_paths(json.loads(f.read_text())), f"{f}: {_absolute_paths(json.loads(f.read_text()))}"


def test_a_run_reexports_identically_with_every_key_generation_reads(tones_dir, tmp_path):
    from sonodiff.pipelines import Pipeline
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train

    cfg = load_config(REPO / "recipes" / "tiny_debug.toml", small_overrides(tones_dir, run_steps=4, batch=4, extra=[
        "demo.guidance_interval=[0.2, 5.0]", "demo.max_window_seconds=0.5", "demo.cfg_rescale=0.3",
        "demo.sampler=ddim", "demo.sampler_options={eta = 0.5}", "demo.schedule=exponential"]))
    train(cfg, tmp_path / "run", log=lambda *a: None)
    a = json.loads((export_run(tmp_path / "run", tmp_path / "m1") / "config.json").read_text())
    b = json.loads((export_run(tmp_path / "run", tmp_path / "m2") / "config.json").read_text())
    assert a == b
    s, au = a["sampling"], a["audio"]
    assert s["guidance_interval"] == [0.2, 5.0] and s["cfg_rescale"] == 0.3 and s["sampler"] == "ddim"
    assert s["sampler_options"] == {"eta": 0.5} and s["schedule"] == "exponential"
    assert au["max_window_seconds"] == 0.5 and au["seconds"] == 0.25
    assert a["source"]["run_dir"] == "run" and a["source"]["data_root"] == Path(tones_dir).name
    assert a["source"]["train_seconds"] > 0
    for f in (tmp_path / "m1").rglob("*.json"):
        assert not _absolute_paths(json.loads(f.read_text())), f
    pipe = Pipeline.from_pretrained(tmp_path / "m1")  # loads with no manual edit, and its defaults are the run's
    assert pipe.max_window_seconds == 0.5
    sp = pipe._sampling(None, None, None, None)
    assert sp["guidance_interval"] == (0.2, 5.0) or list(sp["guidance_interval"]) == [0.2, 5.0]
    assert sp["sampler"] == "ddim" and sp["cfg_rescale"] == 0.3


def test_bad_window_is_a_clear_error(tones_dir):
    with pytest.raises(ValueError, match="max_window_seconds"):
        load_config(REPO / "recipes" / "tiny_debug.toml", small_overrides(tones_dir, extra=["demo.max_window_seconds=-1"]))
    with pytest.raises(ValueError, match="guidance_interval"):
        load_config(REPO / "recipes" / "tiny_debug.toml", small_overrides(tones_dir, extra=["demo.guidance_interval=[3.0, 1.0]"]))


def test_output_sidecars_hold_no_absolute_path(tmp_path):
    """A shipped model by name and the default model: the sidecar names the model, never this machine's path."""
    r = subprocess.run([sys.executable, "-m", "sonodiff", "generate", "7", "--model", "fsdd_digits_mel", "--steps", "2",
                        "--out", "seven.wav"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "seven.json").read_text())
    assert side["model"] == "fsdd_digits_mel" and not _absolute_paths(side), side


def test_a_run_keeps_its_own_codec_when_the_shared_cache_is_refitted(tones_dir, tmp_path):
    """The run saves the statistics it trains with; a later refit of the shared feature cache (data added, another
    split) changes neither what the resumed run normalises with nor what it exports."""
    import shutil

    import numpy as np
    import soundfile as sf
    import torch

    from sonodiff.audio.codecs import load_codec
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train

    data = tmp_path / "data"
    shutil.copytree(tones_dir, data)
    over = lambda n: small_overrides(data, run_steps=n, batch=4, extra=[f"data.cache_dir={tmp_path / 'cache'}"])  # noqa: E731
    train(load_config(REPO / "recipes" / "tiny_debug.toml", over(2)), tmp_path / "run", log=lambda *a: None)
    own = load_codec(tmp_path / "run" / "codec")
    fdir = Path(json.loads((tmp_path / "run" / "config.json").read_text())["feature_dir"])
    assert all(torch.equal(a, b) for a, b in zip(own.stats().values(), load_codec(fdir / "codec").stats().values()))
    t = np.arange(8000) / 8000  # new, louder training data: the shared cache is refitted on the next prepare
    with open(data / "metadata.jsonl", "a") as meta:
        for k in range(6):
            sf.write(data / f"loud{k}.wav", (0.9 * np.sign(np.sin(2 * np.pi * (300 + 97 * k) * t))).astype(np.float32),
                     8000)
            meta.write(json.dumps({"path": f"loud{k}.wav", "caption": "a loud tone", "label": "low", "split": "train"})
                       + "\n")
    logs = []
    train(load_config(REPO / "recipes" / "tiny_debug.toml", over(3)), tmp_path / "run", log=logs.append)
    assert not torch.equal(load_codec(fdir / "codec").mean, own.mean)  # the cache did change
    assert any("keeps normalising with its own statistics" in m for m in logs)
    exported = load_codec(export_run(tmp_path / "run", tmp_path / "m") / "codec")
    assert torch.equal(exported.mean, own.mean)


def test_an_autoguidance_guide_is_kept_from_pruning_and_exported(tones_dir, tmp_path):
    """demo.guide names a checkpoint of the run: pruning keeps it, export writes its EMA weights (bf16) as
    MODEL_DIR/guide and sampling.guide, the Pipeline autoguides with it, and --guide none exports plain CFG."""
    import torch
    from safetensors.torch import load_file

    from sonodiff.pipelines import Pipeline
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train

    cfg = load_config(REPO / "recipes" / "tiny_debug.toml", small_overrides(tones_dir, run_steps=6, batch=4, extra=[
        "train.checkpoint_every=2", "train.keep_last=1", "demo.guide=step_00000002", "demo.guidance_scale=2.0"]))
    train(cfg, tmp_path / "run", log=lambda *a: None)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert kept == ["step_00000002", "step_00000006"]  # step 4 pruned, the guide kept
    m = export_run(tmp_path / "run", tmp_path / "m")
    c = json.loads((m / "config.json").read_text())
    assert c["sampling"]["guide"] == "guide" and c["source"]["guide"]["step"] == 2
    g = load_file(str(m / "guide" / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in g.values() if v.is_floating_point())
    pipe = Pipeline.from_pretrained(m)
    assert pipe.guide is not None
    auto = pipe(None, seeds=[0]).audio
    plain = Pipeline.from_pretrained(m, guide=None)(None, seeds=[0]).audio
    assert not torch.allclose(auto, plain)
    m2 = export_run(tmp_path / "run", tmp_path / "m", guide="", guidance_scale=1.5)  # same folder: guide removed
    c2 = json.loads((m2 / "config.json").read_text())
    assert "guide" not in c2["sampling"] and not (m2 / "guide").exists()
    assert c2["sampling"]["guidance_scale"] == 1.5 and c2["source"]["export_guide"] == ""
    with pytest.raises(ValueError, match="must be one of them"):
        load_config(REPO / "recipes" / "tiny_debug.toml", small_overrides(tones_dir, run_steps=6, extra=[
            "train.checkpoint_every=4", "demo.guide=step_00000002"]))
