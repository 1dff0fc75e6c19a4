"""`sonodiff demo`'s actions without a browser: the page's generate equals the pipeline's, the sidecar rides
along, inpaint/continue of an uploaded clip at another rate, and every bad value names its field."""

import json

import numpy as np
import pytest
import soundfile as sf

from sonodiff.pipelines import Pipeline
from sonodiff.serve.demo import Demo, DemoError
from tests.pipelines.conftest import make_model_dir


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    d = Demo({"tiny_labels": Pipeline.from_pretrained(make_model_dir(root / "tiny_labels")),
              "tiny_uncond": Pipeline.from_pretrained(make_model_dir(root / "tiny_uncond", conditioning="none"))})
    yield d
    d.close()
    assert not d.out_dir.exists()  # its temporary folder goes with it


def test_generate_equals_the_pipeline_and_writes_a_sidecar(demo):
    seen = []
    wav, png, side_path, side = demo.generate("tiny_labels", " high ", 0.5, 4, 2.0, 3, "euler",
                                              progress=lambda f, what: seen.append((f, what)))
    a, sr = sf.read(wav, dtype="float32")
    ref = demo.pipelines["tiny_labels"](["high"], seeds=[3], duration_s=0.5, num_steps=4, guidance_scale=2.0,
                                        sampler="euler").audio[0, 0]
    assert sr == 8000 and a.shape == (4000,)
    peak = float(ref.abs().max())
    ref = ref / peak * 0.999 if peak > 1 else ref
    np.testing.assert_allclose(a, ref.numpy(), atol=1 / 16000)
    assert json.loads(open(side_path).read()) == side
    assert (side["prompt"], side["seed"], side["steps"], side["model"], side["via"]) == ("high", 3, 4, "tiny_labels",
                                                                                         "sonodiff demo")
    assert open(png, "rb").read(4) == b"\x89PNG" and seen[-1] == (pytest.approx(1.0), "sampling") and len(seen) == 4
    seen.clear()  # a clip longer than the model's window goes window by window, and the progress says which
    demo.generate("tiny_labels", "high", 2.0, 2, 2.0, 0, "euler", progress=lambda f, what: seen.append((f, what)))
    assert seen[0] == (0.5, "window 1") and seen[-1][1] == f"window {len(seen) // 2}" and len({w for _, w in seen}) > 2
    wav, *_ = demo.generate("tiny_uncond", "", 0.5, 2, 1.0, 0, "euler")
    assert sf.info(wav).frames == 4000


@pytest.mark.parametrize("args, field", [
    (("nope", "high", 0.5, 4, 2.0, 0, "euler"), "model"),
    (("tiny_labels", "", 0.5, 4, 2.0, 0, "euler"), "prompt"),
    (("tiny_labels", "middle", 0.5, 4, 2.0, 0, "euler"), "prompt"),
    (("tiny_uncond", "high", 0.5, 4, 2.0, 0, "euler"), "prompt"),
    (("tiny_labels", "high", 0, 4, 2.0, 0, "euler"), "duration"),
    (("tiny_labels", "high", 99, 4, 2.0, 0, "euler"), "duration"),
    (("tiny_labels", "high", 0.5, 0, 2.0, 0, "euler"), "steps"),
    (("tiny_labels", "high", 0.5, 4, -1, 0, "euler"), "guidance"),
    (("tiny_labels", "high", 0.5, 4, 2.0, -5, "euler"), "seed"),
    (("tiny_labels", "high", 0.5, 4, 2.0, 0, "magic"), "sampler"),
    (("tiny_labels", "high", "long", 4, 2.0, 0, "euler"), "duration"),
    (("tiny_labels", "high", 0.5, None, 2.0, 0, "euler"), "steps"),
])
def test_bad_values_name_the_field(demo, args, field):
    with pytest.raises(DemoError, match=f"^{field}:"):
        demo.generate(*args)


def test_inpaint_and_continue_an_uploaded_clip(demo, tmp_path):
    t = np.arange(16000) / 16000  # 1 s at 16 kHz, stereo: the demo resamples and mixes down, and says so
    clip = tmp_path / "up.wav"
    sf.write(clip, np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype("float32"), 16000)
    wav, _, _, side = demo.edit("tiny_labels", str(clip), "inpaint", 0.3, 0.6, None, "low", 4, 2.0, 1, "euler")
    out, sr = sf.read(wav, dtype="float32")
    assert sr == 8000 and out.shape == (8000,)
    assert side["input_resampled_from_hz"] == 16000 and side["input_channels"] == 2 and side["task"] == "inpaint"
    from sonodiff.audio.io import apply_channel_policy, load_audio, resample

    x, _ = load_audio(clip)
    ref = apply_channel_policy(resample(x, 16000, 8000), "mono")[0].numpy()
    ref = np.round(ref * 32767) / 32767  # the file is PCM-16
    np.testing.assert_allclose(out[:2300], ref[:2300], atol=1e-4)  # outside [0.3, 0.6) s: the input
    np.testing.assert_allclose(out[4900:], ref[4900:], atol=1e-4)
    assert np.abs(out[2600:4600] - ref[2600:4600]).max() > 1e-2  # inside: regenerated
    wav, _, _, side = demo.edit("tiny_labels", str(clip), "continue", 0, 0, 1.5, "low", 4, 2.0, 1, "euler")
    assert sf.info(wav).frames == 12000 and side["duration_s"] == 1.5
    with pytest.raises(DemoError, match="^start, end:"):
        demo.edit("tiny_labels", str(clip), "inpaint", 0.6, 0.3, None, "low", 4, 2.0, 1, "euler")
    with pytest.raises(DemoError, match="^duration:"):
        demo.edit("tiny_labels", str(clip), "continue", 0, 0, 0.5, "low", 4, 2.0, 1, "euler")
    with pytest.raises(DemoError, match="^clip:"):
        demo.edit("tiny_labels", None, "inpaint", 0.1, 0.2, None, "low", 4, 2.0, 1, "euler")
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(DemoError, match="^clip: cannot read junk.wav"):
        demo.edit("tiny_labels", str(tmp_path / "junk.wav"), "inpaint", 0.1, 0.2, None, "low", 4, 2.0, 1, "euler")
    with pytest.raises(DemoError, match="^start:"):
        demo.edit("tiny_labels", str(clip), "inpaint", None, 0.2, None, "low", 4, 2.0, 1, "euler")
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 31, "float32") + 0.01, 8000)  # over the demo's 30 s
    with pytest.raises(DemoError, match="^clip: long.wav is 31.00 s long"):
        demo.edit("tiny_labels", str(tmp_path / "long.wav"), "inpaint", 0.1, 0.2, None, "low", 4, 2.0, 1, "euler")
    with pytest.raises(DemoError, match="^mode:"):
        demo.edit("tiny_labels", str(clip), "reverse", 0.1, 0.2, None, "low", 4, 2.0, 1, "euler")


@pytest.mark.parametrize("command, module, extra", [("demo", "gradio", "demo"), ("serve", "uvicorn", "serve")])
def test_a_missing_extra_is_named(monkeypatch, capsys, command, module, extra):
    import sys

    from sonodiff.cli import main

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    assert main([command, "--model", "does-not-matter"]) == 2
    assert f'pip install -e ".[{extra}]"' in capsys.readouterr().err
