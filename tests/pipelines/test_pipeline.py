"""Pipelines on a tiny exported model: reproducibility, batch invariance, editing guarantees, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sonodiff.pipelines import Pipeline

REPO = Path(__file__).resolve().parents[2]
FAST = {"num_steps": 4}


def test_seeds_reproduce_and_batch_invariance(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    a = pipe(["low", "high", "low"], seeds=[5, 6, 7], **FAST)
    assert a.audio.shape == (3, 1, 4000) and a.sample_rate == 8000
    b = pipe(["high"], seeds=[6], **FAST)  # sample 1 alone, in a batch of 1
    torch.testing.assert_close(a.features[1:2], b.features, rtol=1e-5, atol=1e-5)
    c = pipe(["low", "high", "low"], seeds=[5, 6, 7], **FAST)
    assert torch.equal(a.features, c.features)  # bit-identical rerun on CPU
    d = pipe(["low"], seeds=[8], **FAST)
    assert not torch.allclose(a.features[0], d.features[0])  # a different seed gives a different sample


def test_guidance_and_conditioning_matter(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    lo = pipe(["low"], seeds=[0], guidance_scale=1.0, **FAST).features
    hi = pipe(["high"], seeds=[0], guidance_scale=1.0, **FAST).features
    assert not torch.allclose(lo, hi)


def test_inpaint_keeps_audio_outside_the_gap(tiny_model_dir, tone):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    out = pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], seeds=[1], **FAST).audio[0]
    a, b = int(0.1 * 8000), int(0.3 * 8000)
    assert torch.equal(out[:, :a], tone[:, :a]) and torch.equal(out[:, b:], tone[:, b:])
    assert not torch.allclose(out[:, a + 100:b - 100], tone[:, a + 100:b - 100])
    rp = pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], seeds=[1], method="repaint", **FAST).audio[0]
    assert torch.equal(rp[:, :a], tone[:, :a]) and torch.equal(rp[:, b:], tone[:, b:])


def test_continuation_keeps_prefix_and_reaches_length(tiny_model_dir, tone):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    out = pipe.continue_audio(tone, 8000, 0.9, ["low"], seeds=[2], **FAST).audio[0]
    assert out.shape == (1, int(0.9 * 8000))
    assert torch.equal(out[:, :tone.shape[-1]], tone)
    assert out[:, tone.shape[-1]:].abs().max() > 0
    seen = []
    pipe.continue_audio(tone, 8000, 0.9, ["low"], seeds=[2], callback=lambda info: seen.append(info["i"]), **FAST)
    pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], seeds=[1], callback=lambda info: seen.append(info["i"]), **FAST)
    assert seen == list(range(FAST["num_steps"])) * 2


def test_variation_strength_zero_returns_input(tiny_model_dir, tone):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    assert torch.equal(pipe.vary(tone, 8000, 0.0, ["low"], seeds=[3]).audio[0], tone)
    v = pipe.vary(tone, 8000, 0.6, ["low"], seeds=[3], **FAST).audio[0]
    assert v.shape == tone.shape and not torch.allclose(v, tone)


def test_long_form_duration_and_no_clicks(tiny_uncond_dir):
    pipe = Pipeline.from_pretrained(tiny_uncond_dir)
    chunks = list(pipe.stream(duration_s=2.0, seeds=[0], **FAST))
    assert len(chunks) > 2
    audio = torch.cat(chunks, dim=-1)
    assert audio.shape == (1, 1, 16000)
    steps = []
    full = pipe(duration_s=2.0, seeds=[0], callback=lambda info: steps.append((info["window"], info["i"])), **FAST).audio
    torch.testing.assert_close(full, audio)
    # the per-step callback reaches every step of every window of a long-form call (a server stops work with it)
    assert steps == [(k, i) for k in range(len(chunks)) for i in range(FAST["num_steps"])]
    # no click at window joins: the largest sample-to-sample jump anywhere near a join is within the
    # signal's normal variation (99.9th percentile of all jumps, times 2)
    d = audio[0, 0].diff().abs()
    normal = torch.quantile(d, 0.999)
    joins = torch.cumsum(torch.tensor([c.shape[-1] for c in chunks[:-1]]), 0)
    for j in joins.tolist():
        assert d[j - 3:j + 3].max() <= 2 * normal, (j, d[j - 3:j + 3].max(), normal)


@pytest.mark.parametrize("kwargs, msg", [
    ({"prompts": [""]}, "non-empty string"),
    ({"prompts": ["loud"]}, "not a label"),
    ({"prompts": ["low"], "duration_s": 0}, "positive number"),
    ({"prompts": ["low"], "duration_s": -1.0}, "positive number"),
    ({"prompts": ["low"], "duration_s": 1e6}, "limit"),
    ({"prompts": ["low"], "sampler": "nope"}, "unknown sampler"),
    ({"prompts": ["low"], "seeds": [1, 2]}, "2 seeds for 1 outputs"),
    ({"prompts": None}, "conditional: give prompts"),
])
def test_bad_generation_input(tiny_model_dir, kwargs, msg):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    prompts = kwargs.pop("prompts")
    with pytest.raises(ValueError, match=msg):
        pipe(prompts, **kwargs)


def test_bad_model_dirs_and_wrong_rate(tmp_path, tiny_model_dir, tone):
    with pytest.raises(FileNotFoundError, match="neither a directory nor a shipped model"):
        Pipeline.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        Pipeline.from_pretrained(tmp_path / "empty")
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        Pipeline.from_pretrained(bad)
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="16000 Hz but this model works at 8000 Hz"):
        pipe.vary(tone, 16000, 0.5, ["low"])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sonodiff", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_generate_sidecar_resume_and_errors(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("low\nhigh\n# a comment\nlow\n")
    r = _cli("generate", "--prompts", str(prompts), "--out-dir", "o", "--model", str(tiny_model_dir), "--steps", "3",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wavs = sorted((tmp_path / "o").glob("*.wav"))
    assert len(wavs) == 3
    side = json.loads(wavs[0].with_suffix(".json").read_text())
    assert side["prompt"] == "low" and side["steps"] == 3 and side["weights_sha256_16"] and side["sonodiff_version"]
    # simulate an interrupted batch: one output missing; a re-run writes only that one
    mtimes = {w: w.stat().st_mtime_ns for w in wavs}
    wavs[1].unlink()
    r = _cli("generate", "--prompts", str(prompts), "--out-dir", "o", "--model", str(tiny_model_dir), "--steps", "3",
             cwd=tmp_path)
    assert r.returncode == 0 and "2 output(s) already written" in r.stdout
    assert wavs[1].exists() and all(w.stat().st_mtime_ns == mtimes[w] for w in (wavs[0], wavs[2]))
    # bad input: a clear error and no partial output
    r = _cli("generate", "loud", "--model", str(tiny_model_dir), "--out", "x.wav", cwd=tmp_path)
    assert r.returncode == 2 and "not a label" in r.stderr and not (tmp_path / "x.wav").exists()
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--duration", "-2", "--out", "y.wav", cwd=tmp_path)
    assert r.returncode == 2 and "positive" in r.stderr and not (tmp_path / "y.wav").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_guidance_interval(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    kw = {"seeds": [0, 1], **FAST}
    full = pipe(["low", "high"], guidance_scale=3.0, guidance_interval=None, **kw).features
    # an interval holding every noise level of the grid is plain guidance
    wide = pipe(["low", "high"], guidance_scale=3.0, guidance_interval=(0.0, 1e9), **kw).features
    torch.testing.assert_close(wide, full)
    # an interval holding none of them is no guidance (the conditional branch alone)
    none = pipe(["low", "high"], guidance_scale=3.0, guidance_interval=(1e6, 1e9), **kw).features
    torch.testing.assert_close(none, pipe(["low", "high"], guidance_scale=1.0, **kw).features)
    part = pipe(["low", "high"], guidance_scale=3.0, guidance_interval=(0.5, 5.0), **kw).features
    assert not torch.allclose(part, full) and not torch.allclose(part, none)
    # the model's config supplies the default
    pipe.config["sampling"]["guidance_interval"] = [1e6, 1e9]
    torch.testing.assert_close(pipe(["low", "high"], guidance_scale=3.0, **kw).features, none)
    for bad in ((2.0, 1.0), (-1.0, 1.0), (1.0,), "0.3:5"):
        with pytest.raises(ValueError, match="guidance_interval"):
            pipe(["low"], guidance_interval=bad, **FAST)


def test_one_pass_window(tiny_uncond_dir):
    pipe = Pipeline.from_pretrained(tiny_uncond_dir)
    assert pipe.max_window_seconds == pipe.train_seconds == 0.5
    windowed = pipe(duration_s=1.0, seeds=[0], **FAST)
    assert windowed.features.numel() == 0 and windowed.audio.shape == (1, 1, 8000)  # stitched from windows
    pipe.config["audio"]["max_window_seconds"] = 1.0
    one = pipe(duration_s=1.0, seeds=[0], **FAST)
    assert one.audio.shape == (1, 1, 8000) and one.features.shape[-1] == pipe._frames(1.0)  # a single pass
    assert not torch.allclose(one.audio, windowed.audio)
    # stream() uses windows of max_window_seconds too
    chunks = list(pipe.stream(duration_s=2.0, seeds=[0], **FAST))
    assert sum(c.shape[-1] for c in chunks) == 16000 and len(chunks) == 3
    pipe.config["audio"]["max_window_seconds"] = 0.25
    with pytest.raises(ValueError, match="max_window_seconds"):
        pipe(duration_s=1.0, seeds=[0], **FAST)


def test_two_d_nets_run_channels_last_with_the_same_numbers(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    conv = next(m for m in pipe.model.denoiser.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    a = pipe(["low"], seeds=[4], **FAST).features
    pipe.model.denoiser.net.to(memory_format=torch.contiguous_format)
    b = pipe(["low"], seeds=[4], **FAST).features
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_cli_cfg_interval(tiny_model_dir, tmp_path):
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--steps", "3", "--cfg-interval", "0.5", "5",
             "--out", "a.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "a.json").read_text())["guidance_interval"] == [0.5, 5.0]
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--cfg-interval", "0.5", "--out", "b.wav", cwd=tmp_path)
    assert r.returncode == 2 and "--cfg-interval takes two noise levels" in r.stderr and not (tmp_path / "b.wav").exists()
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--cfg-interval", "5", "0.5", "--out", "c.wav", cwd=tmp_path)
    assert r.returncode == 2 and "0 <= lo < hi" in r.stderr and not (tmp_path / "c.wav").exists()
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--device", "gpu", "--out", "d.wav", cwd=tmp_path)
    assert r.returncode == 2 and "--device 'gpu' is not a device" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d.wav").exists()


def test_micro_batching_gives_the_same_samples(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    assert pipe.max_rows == 8  # CPU default
    kw = {"seeds": [0, 1, 2], "guidance_scale": 3.0, **FAST}
    pipe.max_rows = None
    whole = pipe(["low", "high", "low"], **kw).features
    pipe.max_rows = 1  # every network call split into single rows (2B = 6 calls per step)
    calls = []
    net = pipe.model.denoiser.net
    h = net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    split = pipe(["low", "high", "low"], **kw).features
    h.remove()
    assert set(calls) == {1}
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_rows"):
        from sonodiff.pipelines.sampling import MicroBatched
        MicroBatched(pipe.model.denoiser, 0)


# ----------------------------------------------------------------------------------------------- autoguidance
def test_autoguidance_with_a_guide_model(tiny_model_dir, tmp_path):
    """A guide model replaces the unconditional branch: w = 1 is the main model alone, another w changes the
    output, a model dir can name its own guide (sampling.guide), and a guide of another task is refused."""
    import json
    import shutil

    from tests.pipelines.conftest import make_model_dir
    from sonodiff.pipelines import Pipeline

    guide_dir = make_model_dir(tmp_path / "guide", seed=1)
    # the guide must share the codec statistics: give it the main model's codec
    shutil.rmtree(guide_dir / "codec")
    shutil.copytree(tiny_model_dir / "codec", guide_dir / "codec")
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    plain = pipe(["high", "low"], seeds=[0, 1], guidance_scale=1.0).audio
    cfg = pipe(["high", "low"], seeds=[0, 1], guidance_scale=3.0).audio
    pipe.set_guide(guide_dir)
    assert torch.equal(pipe(["high", "low"], seeds=[0, 1], guidance_scale=1.0).audio, plain)
    auto = pipe(["high", "low"], seeds=[0, 1], guidance_scale=3.0).audio
    assert not torch.allclose(auto, cfg) and not torch.allclose(auto, plain)
    with pytest.raises(ValueError, match="negative"):
        pipe(["high", "low"], seeds=[0, 1], guidance_scale=3.0, negative_prompt="low")
    pipe.set_guide(None)
    assert torch.equal(pipe(["high", "low"], seeds=[0, 1], guidance_scale=3.0).audio, cfg)

    own = tmp_path / "with_guide"
    shutil.copytree(tiny_model_dir, own)
    shutil.copytree(guide_dir, own / "guide")
    c = json.loads((own / "config.json").read_text())
    c["sampling"]["guide"] = "guide"
    (own / "config.json").write_text(json.dumps(c))
    p2 = Pipeline.from_pretrained(own)
    assert p2.guide is not None
    assert torch.equal(p2(["high", "low"], seeds=[0, 1], guidance_scale=3.0).audio, auto)
    assert Pipeline.from_pretrained(own, guide=None).guide is None

    other = make_model_dir(tmp_path / "uncond", conditioning="none")
    with pytest.raises(ValueError, match="conditioning"):
        pipe.set_guide(other)
    refit = make_model_dir(tmp_path / "refit", seed=2)  # same settings, its own codec statistics
    from sonodiff.audio.codecs import load_codec

    codec = load_codec(refit / "codec")
    for b in codec.buffers():
        b.add_(0.1)
    codec.save(refit / "codec")
    with pytest.raises(ValueError, match="statistics"):
        pipe.set_guide(refit)


def test_cli_generate_protocol_and_best_of(tiny_model_dir, tmp_path):
    from sonodiff.eval.clap import ClapConfig, ClapNet, save_clap_dir

    proto = tmp_path / "p.json"
    proto.write_text(json.dumps({"name": "tiny_protocol", "clips": [{"id": "a1", "label": "low", "caption": "x"},
                                                                    {"id": "b2", "label": "high"}]}))
    r = _cli("generate", "--protocol", str(proto), "--out-dir", "o", "--model", str(tiny_model_dir), "--steps", "3",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "o" / "b2.json").read_text())
    assert side["prompt"] == "high" and side["label"] == "high" and side["id"] == "b2"
    assert side["protocol"] == "tiny_protocol" and (tmp_path / "o" / "a1.wav").exists()
    # best-of: N candidates ranked by a CLAP; the sidecar says so and holds the chosen candidate's seed
    torch.manual_seed(0)
    net = ClapNet(ClapConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, width=8, embed_dim=16,
                             text_hidden=32))
    save_clap_dir(tmp_path / "clap", config=net.config, state=net.state_dict(), source={"name": "tiny"})
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--steps", "3", "--best-of", "3", "--clap",
             str(tmp_path / "clap"), "--seed", "2", "--out", "best.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "best.json").read_text())
    assert side["best_of"] == 3 and side["seed"] in (6, 7, 8) and side["label"] == "low"
    r = _cli("generate", "low", "--model", str(tiny_model_dir), "--best-of", "0", "--out", "z.wav", cwd=tmp_path)
    assert r.returncode == 2 and "--best-of must be >= 1" in r.stderr
