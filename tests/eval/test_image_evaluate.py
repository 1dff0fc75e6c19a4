"""`sonodiff evaluate` on folders of images: the same set specs, sidecars, protocols and report as audio."""

import json
import shutil

import numpy as np
import pytest
import torch

from sonodiff.data.bundled import build_bundled
from sonodiff.eval.evaluate import evaluate_images, is_image_set, load_image_set


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return build_bundled("sklearn_digits", tmp_path_factory.mktemp("d") / "digits")


def _as_generated(digits, out, noise=0, limit=60):
    """Real test digits copied out as `sonodiff generate` would write them (PNG + sidecar with prompt and label)."""
    from sonodiff.audio.image_io import read_image, save_png

    rows = [json.loads(x) for x in (digits / "metadata.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "test"][:limit]
    out.mkdir()
    g = torch.Generator().manual_seed(0)
    for r in rows:
        x = read_image(digits / r["path"], 1)
        if noise:
            x = (x.float() + noise * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
        name = out / r["path"]
        name.parent.mkdir(parents=True, exist_ok=True)
        save_png(name, x)
        name.with_suffix(".json").write_text(json.dumps({"prompt": r["caption"], "label": r["label"]}))
    return out


def test_real_images_score_like_real_and_noise_like_noise(digits, tmp_path):
    gen = _as_generated(digits, tmp_path / "gen")
    assert is_image_set(str(gen)) and not is_image_set(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no image of .* has a namesake"):  # test images are not in the train split
        evaluate_images(str(gen), f"{digits}@split=train", metrics=("psnr",), log=lambda m: None)
    rep = evaluate_images(str(gen), f"{digits}@split=train", metrics=("accuracy", "frechet", "kid"),
                          calibration={"real valid": f"{digits}@split=valid"}, classifier=tmp_path / "clf",
                          classifier_steps=250, bootstrap=20, log=lambda m: None)
    rows = {r["row"]: r["metrics"] for r in rep.rows}
    assert [r["row"] for r in rep.rows] == ["gen", "calibration: real valid", "calibration: uniform noise"]
    assert rows["gen"]["accuracy"]["value"] >= 0.85
    assert rows["calibration: uniform noise"]["accuracy"]["value"] < 0.4
    assert rows["gen"]["frechet"]["value"] < rows["calibration: uniform noise"]["frechet"]["value"] / 10
    assert rows["gen"]["kid"]["value"] < rows["calibration: uniform noise"]["kid"]["value"] / 10
    assert (tmp_path / "clf" / "config.json").is_file()  # saved, and loaded by the next run
    md = rep.to_markdown()
    assert "FID (in-house)" in md and "KID x1000" in md and "images)" in md


def test_paired_psnr_and_ssim_against_namesakes(digits, tmp_path):
    ref = tmp_path / "ref"
    _as_generated(digits, ref, limit=20)
    same = evaluate_images(str(ref), str(ref), metrics=("psnr", "ssim"), noise=False, log=lambda m: None)
    m = same.rows[0]["metrics"]
    assert m["psnr"]["value"] == float("inf") and m["psnr"]["identical"] == 20
    assert m["ssim"]["value"] == pytest.approx(1.0)
    noisy = _as_generated(digits, tmp_path / "noisy", noise=20, limit=20)
    m = evaluate_images(str(noisy), str(ref), metrics=("psnr", "ssim"), noise=False, log=lambda m: None).rows[0]["metrics"]
    from sonodiff.eval.images import psnr

    a, b = load_image_set(str(ref)), load_image_set(str(noisy))
    assert m["psnr"]["value"] == pytest.approx(float(np.mean(psnr(a.images, b.images).values)))
    assert 10 < m["psnr"]["value"] < 40 and m["ssim"]["value"] < 0.99


def test_image_evaluation_errors(digits, tmp_path):
    gen = _as_generated(digits, tmp_path / "gen", limit=10)
    with pytest.raises(ValueError, match="valid metrics for images"):
        evaluate_images(str(gen), str(gen), metrics=("pesq",))
    for p in gen.rglob("*.json"):
        p.write_text(json.dumps({"prompt": "x"}))
    with pytest.raises(ValueError, match="needs a 'label' for every image"):
        evaluate_images(str(gen), f"{digits}@split=train", metrics=("accuracy",))
    other = tmp_path / "big"
    other.mkdir()
    from sonodiff.audio.image_io import save_png

    save_png(other / "a.png", torch.zeros(1, 9, 9, dtype=torch.uint8))
    save_png(other / "b.png", torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"b.png is 8x8 \(HxW\); this model takes 9x9"):
        load_image_set(str(other))
    shutil.rmtree(other)


def test_cli_evaluate_images_and_audio_only_flags(digits, tmp_path, capsys):
    from sonodiff.cli import main

    gen = _as_generated(digits, tmp_path / "gen", limit=30)
    rc = main(["evaluate", str(gen), "--reference", f"{digits}@split=train", "--classifier-steps", "150",
               "--bootstrap", "0", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["settings"]["metrics"] == ["accuracy", "frechet", "kid"] and r["settings"]["modality"] == "image"
    capsys.readouterr()
    assert main(["evaluate", str(gen), "--reference", str(digits), "--resynthesis", "fsdd_digits_mel"]) == 2
    assert "--resynthesis apply to audio" in capsys.readouterr().err
