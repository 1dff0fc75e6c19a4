"""Images end to end through the shared code: bundled data -> cache -> `sonodiff train` -> export -> Pipeline / CLI,
and image editing (inpainting, outpainting, variation) with its errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sonodiff.pipelines import Pipeline

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mnist_digits.toml"
TINY = ["--set", "codec.options.height=8", "--set", "codec.options.width=8",
        "--set", "model.options={channels=[16,32], blocks=[1,1], factors=[2], groups=8, head_dim=16, "
                 "attention=[false,true]}",
        "--set", "train.steps=4", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=2",
        "--set", "train.threads=1", "--set", "demo.every=2", "--set", "demo.steps=2",
        "--set", 'demo.prompts=["a handwritten seven","the digit 3"]', "--set", "train.progress=false"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sonodiff", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """A tiny text-to-image model trained by the real engine on the bundled 8x8 digits, and exported."""
    d = tmp_path_factory.mktemp("img")
    r = _cli("train", str(RECIPE), "--out", "run", "--set", "data.root=digits", "--set", "data.bundled=sklearn_digits",
             "--set", "data.cache_dir=cache", *TINY, cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (d / "run" / "demos" / "step_00000004").iterdir()) == [
        "0_a_handwritten_seven.png", "1_the_digit_3.png", "grid.png"]
    r = _cli("export", "run", "--out", "model", cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "model"


def _image(model_dir, index=7):
    from sonodiff.audio.image_io import read_image

    return read_image(Path(model_dir).parent / "digits" / "images" / f"{index:05d}.png", 1, (8, 8))


def test_export_writes_an_image_section_and_no_audio(image_model):
    c = json.loads((image_model / "config.json").read_text())
    assert c["image"] == {"codec": "image", "channels": 1, "height": 8, "width": 8}
    assert "audio" not in c and c["model"]["conditioning"]["type"] == "sentence"
    from sonodiff.models.model_dir import save_model_dir

    with pytest.raises(ValueError, match="image model directory takes the 'image' section"):
        from sonodiff.audio.codecs import make_codec

        save_model_dir(image_model.parent / "x", model_state={}, spec={}, codec=make_codec("image", height=8, width=8),
                       sampling={}, source={}, audio={"sample_rate": 8000})


def test_pipeline_returns_images_seeded_and_batch_invariant(image_model):
    pipe = Pipeline.from_pretrained(image_model)
    assert pipe.modality == "image" and pipe.image_size == (1, 8, 8)
    out = pipe(["a handwritten seven", "the digit 3"], num_per_prompt=2, seeds=[0, 1, 2, 3], num_steps=3)
    assert out.images.dtype == torch.uint8 and out.images.shape == (4, 1, 8, 8)
    assert out.audio is None and out.sample_rate is None and out.modality == "image"
    one = pipe(["the digit 3"], seeds=[3], num_steps=3)
    assert torch.equal(one.images[0], out.images[3])  # sample k depends only on (prompt k, seed k)
    assert not torch.equal(out.images[0], out.images[1])
    side = pipe.provenance("the digit 3", 3)
    assert side["image_size"] == [1, 8, 8] and "sample_rate" not in side


def test_audio_only_arguments_are_errors_for_an_image_model(image_model):
    pipe = Pipeline.from_pretrained(image_model)
    with pytest.raises(ValueError, match="duration_s has no meaning for an image model"):
        pipe("a seven", duration_s=1.0)
    with pytest.raises(ValueError, match="is an image model"):
        pipe.sample_rate
    with pytest.raises(ValueError, match="for audio models;.*is an image model"):
        pipe.vary(torch.zeros(1, 800), 8000, 0.5, ["a seven"])
    with pytest.raises(ValueError, match="for audio models"):
        next(pipe.stream("a seven", duration_s=2.0))
    with pytest.raises(ValueError, match="decodes to image itself; it takes no vocoder"):
        Pipeline.from_pretrained(image_model, vocoder="griffin_lim")


def test_image_inpainting_keeps_every_known_pixel(image_model):
    pipe = Pipeline.from_pretrained(image_model)
    img = _image(image_model)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, 4:] = True  # regenerate the right half
    out = pipe.inpaint_image(img, mask, "a handwritten seven", seeds=[0], num_steps=4)
    assert out.images.shape == (1, 1, 8, 8)
    assert torch.equal(out.images[0][:, ~mask], img[:, ~mask])  # the known half is exact (PSNR infinite)
    assert not torch.equal(out.images[0], img)
    rp = pipe.inpaint_image(img, mask, "a handwritten seven", seeds=[0], num_steps=4, method="repaint")
    assert torch.equal(rp.images[0][:, ~mask], img[:, ~mask])
    with pytest.raises(ValueError, match=r"mask must be a bool tensor \[H, W\] = \[8, 8\]"):
        pipe.inpaint_image(img, mask[:4], "a seven")
    with pytest.raises(ValueError, match="selects no pixel"):
        pipe.inpaint_image(img, torch.zeros(8, 8, dtype=torch.bool), "a seven")
    with pytest.raises(ValueError, match="is 1x6x8 .*takes 1x8x8"):
        pipe.inpaint_image(img[:, :6], mask, "a seven")
    with pytest.raises(ValueError, match="uint8 tensor"):
        pipe.inpaint_image(img.float(), mask, "a seven")


def test_outpainting_and_variation(image_model):
    pipe = Pipeline.from_pretrained(image_model)
    img = _image(image_model)
    crop = img[:, 2:, :]  # 6x8: extend 2 rows at the top
    out = pipe.outpaint_image(crop, (0, 0, 2, 0), "a handwritten seven", seeds=[1], num_steps=4)
    assert out.images.shape == (1, 1, 8, 8) and torch.equal(out.images[0][:, 2:], crop)
    with pytest.raises(ValueError, match="is 6x9; this model generates 8x8 images"):
        pipe.outpaint_image(crop, (1, 0, 0, 0), "a seven")
    with pytest.raises(ValueError, match="four pixel counts"):
        pipe.outpaint_image(crop, (0, 0, -2, 4), "a seven")
    same = pipe.vary_image(img, 0.0, "a seven", seeds=[0])
    assert torch.equal(same.images[0], img)
    v = pipe.vary_image(img, 0.6, "a seven", seeds=[0], num_steps=6)
    assert v.images.shape == (1, 1, 8, 8) and not torch.equal(v.images[0], img)
    v2 = pipe.vary_image(img, 0.6, "a seven", seeds=[0], num_steps=6)
    assert torch.equal(v.images, v2.images)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        pipe.vary_image(img, 1.5, "a seven")


def test_cli_images_grid_sidecars_and_editing(image_model, tmp_path):
    from PIL import Image

    m = str(image_model)
    r = _cli("generate", "a handwritten seven", "--model", m, "-n", "4", "--out", "sevens.png", "--steps", "3",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for k in range(4):
        side = json.loads((tmp_path / f"sevens_{k}.json").read_text())
        assert side["prompt"] == "a handwritten seven" and side["seed"] == k and side["image_size"] == [1, 8, 8]
        assert Image.open(tmp_path / f"sevens_{k}.png").size == (8, 8)
    grid = json.loads((tmp_path / "sevens.json").read_text())
    assert [t["seed"] for t in grid["grid"]] == [0, 1, 2, 3] and grid["columns"] == 2
    assert Image.open(tmp_path / "sevens.png").size == (2 * 10 + 2, 2 * 10 + 2)
    src = image_model.parent / "digits" / "images" / "00007.png"
    mask = tmp_path / "mask.png"
    a = torch.zeros(8, 8, dtype=torch.uint8)
    a[4:] = 255
    Image.fromarray(a.numpy()).save(mask)
    r = _cli("inpaint", str(src), "--mask", str(mask), "a handwritten seven", "--model", m, "--out", "fix.png",
             "--steps", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fixed = torch.from_numpy(np.array(Image.open(tmp_path / "fix.png")))
    orig = torch.from_numpy(np.array(Image.open(src)))
    assert torch.equal(fixed[:4], orig[:4])  # the unmasked top half is the input's, bit for bit
    assert json.loads((tmp_path / "fix.json").read_text())["masked_pixels"] == 32
    half = tmp_path / "half.png"
    Image.fromarray(orig[:, :6].numpy()).save(half)
    r = _cli("inpaint", str(half), "--extend", "0,2,0,0", "the digit 7", "--model", m, "--out", "wide.png",
             "--steps", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "wide.json").read_text())["extend"] == [0, 2, 0, 0]
    r = _cli("vary", str(src), "--strength", "0.5", "the digit 7", "--model", m, "--steps", "3", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "vary.png").exists() and (tmp_path / "vary.json").exists()


@pytest.mark.parametrize("args, msg", [
    (["generate", "a seven", "--spectrogram", "--out", "o.png"], "--spectrogram is for audio models"),
    (["generate", "a seven", "--duration", "2", "--out", "o.png"], "--duration is for audio models"),
    (["generate", "a seven", "--out", "o.wav"], "--out must end in .png for an image model"),
    (["inpaint", "{src}", "--mask", "{big}", "a seven", "--out", "o.png"], "mask .*big.png is 9x9 but the image is 8x8"),
    (["inpaint", "{big}", "--mask", "{mask}", "a seven", "--out", "o.png"],
     r"big.png is 9x9 \(HxW\); this model takes 8x8 images \(pass --resize"),
    (["inpaint", "{src}", "a seven", "--out", "o.png"], "needs exactly one of --mask"),
    (["inpaint", "{src}", "--start", "0", "--end", "1", "a seven", "--out", "o.png"], "--start/--end select a time span"),
    (["vary", "{notimg}", "a seven", "--out", "o.png"], "notimg.png is not a readable image"),
    (["vary", "{wav}", "a seven", "--out", "o.png"], r"clip.wav is an audio file; an image model takes images"),
    (["vary", "{rgb}", "a seven", "--out", "o.png"], "is a 'RGB' image; this model takes 1-channel images"),
    (["continue", "{src}", "a seven", "--duration", "2", "--out", "o.png"], "continue extends audio"),
])
def test_cli_image_errors_name_the_problem_and_write_nothing(image_model, tmp_path, monkeypatch, capsys, args, msg):
    from PIL import Image

    from sonodiff.cli import main

    Image.fromarray(torch.zeros(9, 9, dtype=torch.uint8).numpy()).save(tmp_path / "big.png")
    Image.fromarray(torch.full((8, 8), 255, dtype=torch.uint8).numpy()).save(tmp_path / "mask.png")
    Image.fromarray(torch.zeros(8, 8, 3, dtype=torch.uint8).numpy(), mode="RGB").save(tmp_path / "rgb.png")
    (tmp_path / "notimg.png").write_text("not an image")
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", torch.zeros(800).numpy(), 8000)
    names = {"src": str(image_model.parent / "digits" / "images" / "00007.png"), "big": "big.png", "mask": "mask.png",
             "notimg": "notimg.png", "wav": "clip.wav", "rgb": "rgb.png"}
    monkeypatch.chdir(tmp_path)
    rc = main([a.format(**names) for a in args] + ["--model", str(image_model), "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2, err
    import re

    assert re.search(msg, err), err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.json").exists()
    assert not (tmp_path / "o.wav").exists()


def test_an_image_given_to_an_audio_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from sonodiff.cli import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(torch.zeros(8, 8, dtype=torch.uint8).numpy()).save(tmp_path / "digit.png")
    assert main(["vary", "digit.png", "7", "--model", "fsdd_digits_mel", "--out", "v.wav"]) == 2
    assert "digit.png is an image; fsdd_digits_mel is an audio model" in capsys.readouterr().err
    assert not (tmp_path / "v.wav").exists()
    assert main(["inpaint", "x.wav", "--mask", "m.png", "7", "--model", "fsdd_digits_mel"]) == 2
    assert "--mask is for image models" in capsys.readouterr().err


# --- the in-house CLIP: task "contrastive" on images --------------------------------------------------------------
CLIP_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_mnist.toml"


@pytest.fixture(scope="module")
def image_clip(image_model):
    d = image_model.parent
    r = _cli("train", str(CLIP_RECIPE), "--out", "cliprun", "--set", "data.root=digits",
             "--set", "data.bundled=sklearn_digits", "--set", "codec.options.height=8", "--set", "codec.options.width=8",
             "--set", "train.steps=40", "--set", "train.batch_size=64", "--set", "train.threads=1",
             "--set", "train.valid_every=40", "--set", "train.checkpoint_every=40", "--set", "train.progress=false",
             "--set", "contrastive.model={width=16, embed_dim=32, text_hidden=64}", cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "text->image R@1" in r.stdout + r.stderr
    r = _cli("export", "cliprun", "--out", "clip", cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "clip"


def test_inhouse_clip_embeds_images_and_scores_captions(image_clip, image_model):
    from sonodiff.eval.clap import clip_score, load_clap, retrieval_recall

    clip = load_clap(image_clip)
    assert clip.modality == "image"
    imgs = torch.stack([_image(image_model, i) for i in range(12)])
    e = clip.embed_images(imgs)
    assert e.shape == (12, 32) and torch.allclose(e.norm(dim=-1), torch.ones(12), atol=1e-5)
    assert torch.allclose(clip.embed_images(imgs[3:4]), e[3:4], atol=1e-5)  # batch invariant (eval-mode norms)
    caps = ["a handwritten seven"] * 12
    sc = clip_score(clip, imgs, caps)
    assert sc.shape == (12,) and torch.allclose(sc, (e * clip.embed_text(caps)).sum(-1), atol=1e-5)
    r = retrieval_recall(e, clip.embed_text([f"the digit {i % 10}" for i in range(12)]),
                         [f"the digit {i % 10}" for i in range(12)])
    assert 0 <= r["t2a_R@1"] <= r["t2a_R@10"] <= 1
    with pytest.raises(ValueError, match="embeds images"):
        clip.net.embed_pixels(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="text-audio CLAP"):
        load_clap("clap_corpus").embed_images(imgs)


def test_clip_conditioning_ranking_and_score_metric(image_clip, image_model, tmp_path):
    from sonodiff.conditioning.registry import from_config

    cond = from_config({"type": "clap_inhouse", "path": str(image_clip)})
    c = cond(cond.tokenize(["a handwritten seven", "the digit 3"]))
    assert c.pooled.shape == (2, 32)  # a diffusion model can be conditioned on the CLIP's text embeddings
    m = str(image_model)
    r = _cli("generate", "a handwritten seven", "--model", m, "--best-of", "3", "--clip", str(image_clip),
             "--out", "best.png", "--steps", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "best.json").read_text())
    assert side["best_of"] == 3 and side["seed"] in (0, 1, 2) and "duration_s" not in side
    from sonodiff.eval.evaluate import evaluate_images

    gen = tmp_path / "g"
    r = _cli("generate", "--prompts", str(_prompts(tmp_path)), "--model", m, "--out-dir", str(gen), "--steps", "2",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = evaluate_images(str(gen), str(image_model.parent / "digits"), metrics=("clip",), clip=image_clip,
                          log=lambda x: None)
    rows = {x["row"]: x["metrics"] for x in rep.rows}
    assert -1 <= rows["g"]["clip"]["value"] <= 1 and "clip" in rows["calibration: uniform noise"]
    with pytest.raises(ValueError, match="a text-audio CLAP, not a text-image CLIP"):
        evaluate_images(str(gen), str(image_model.parent / "digits"), metrics=("clip",), clip="clap_corpus")


def _prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("a handwritten seven\nthe digit 3\n")
    return p


def test_the_audio_service_refuses_an_image_model_by_name(image_model):
    from sonodiff.serve.app import load_pipelines

    with pytest.raises(ValueError, match="is an image model; sonodiff serve and demo serve audio models"):
        load_pipelines([str(image_model)])
