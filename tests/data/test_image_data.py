"""The image data path: bundled digits written as a folder dataset, measured attributes, image reading with
clear errors, and the same feature cache as audio (bad files reported, never dropped silently)."""

import json

import numpy as np
import pytest
import torch

from sonodiff.audio.codecs import make_codec
from sonodiff.audio.image_io import ImageFileError, image_grid, read_image, save_png
from sonodiff.data.bundled import build_bundled, digit_caption, slant, stroke_thickness
from sonodiff.data.cache import prepare
from sonodiff.data.datasets import CachedDataset


def _png(path, a, mode=None):
    from PIL import Image

    Image.fromarray(np.asarray(a, dtype=np.uint8), mode=mode).save(path)


def test_thickness_and_slant_measure_the_pixels():
    img = np.zeros((28, 28), np.uint8)
    thin, thick = img.copy(), img.copy()
    thin[4:24, 13:15] = 255  # a 2-px vertical bar
    thick[4:24, 11:17] = 255  # a 6-px one
    assert stroke_thickness(thin) == pytest.approx(2.0, rel=0.25)
    assert stroke_thickness(thick) == pytest.approx(6.0, rel=0.25)
    assert abs(slant(thin)) < 1e-9
    leaning = img.copy()
    for y in range(4, 24):  # top to the right: x falls by 0.5 px per row going down
        x = int(round(18 - 0.5 * (y - 4)))
        leaning[y, x:x + 2] = 255
    assert slant(leaning) == pytest.approx(0.5, abs=0.08)


def test_captions_use_the_attributes_only_where_they_are_clear():
    forms = {digit_caption(7, i, 0.5, 0.9) for i in range(40)}
    assert {"a handwritten seven", "the digit 7", "a seven slanted to the right"} <= forms
    assert not any("thick" in f or "thin" in f for f in forms)  # thickness at the median is not remarkable
    assert any(f == "a thick 8" for f in (digit_caption(8, i, 0.9, 0.5) for i in range(40)))
    assert any(f == "an eight slanted to the right" for f in (digit_caption(8, i, 0.5, 0.95) for i in range(40)))


def test_bundled_digits_are_a_folder_dataset_with_per_class_splits(tmp_path):
    out = build_bundled("sklearn_digits", tmp_path / "d")
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 1797 and {r["label"] for r in rows} == {str(d) for d in range(10)}
    for d in range(10):
        s = [r["split"] for r in rows if r["label"] == str(d)]
        assert s.count("valid") >= 15 and s.count("test") >= 15 and s.count("train") > 0.75 * len(s)
    assert all(r["caption"] and r["thickness"] > 0 for r in rows)
    assert read_image(out / rows[0]["path"], 1, (8, 8)).shape == (1, 8, 8)
    assert build_bundled("sklearn_digits", out) == out  # built once: a second call keeps it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a built 'sklearn_digits' data set"):
        build_bundled("sklearn_digits", tmp_path / "other")
    with pytest.raises(ValueError, match="unknown bundled data set 'cifar'"):
        build_bundled("cifar", tmp_path / "c")


def test_read_image_errors_name_the_file_and_what_is_allowed(tmp_path):
    _png(tmp_path / "g.png", np.full((6, 5), 7))
    x = read_image(tmp_path / "g.png", 1)
    assert x.dtype == torch.uint8 and x.shape == (1, 6, 5) and int(x[0, 0, 0]) == 7
    _png(tmp_path / "rgb.png", np.zeros((6, 5, 3)), "RGB")
    assert read_image(tmp_path / "rgb.png", 3).shape == (3, 6, 5)
    cases = [
        ("rgb.png", dict(channels=1), "wrong_channels", "is a 'RGB' image; this model takes 1-channel images"),
        ("g.png", dict(channels=1, size=(8, 8)), "wrong_size", r"is 6x5 \(HxW\); this model takes 8x8"),
        ("missing.png", {}, "missing_file", "no such file"),
        ("clip.wav", {}, "not_image", "is an audio file; an image model takes images"),
        ("text.png", {}, "unreadable", "is not a readable image"),
        ("empty.png", {}, "zero_length", "0 bytes"),
    ]
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, kw, reason, msg in cases:
        with pytest.raises(ImageFileError, match=msg) as e:
            read_image(tmp_path / name, **kw)
        assert e.value.reason == reason and name in str(e.value)
    big = read_image(tmp_path / "g.png", 1, (8, 8), resize=True)
    assert big.shape == (1, 8, 8)


def test_png_round_trip_and_grid(tmp_path):
    img = torch.randint(0, 256, (1, 5, 4), dtype=torch.uint8)
    save_png(tmp_path / "a.png", img)
    assert torch.equal(read_image(tmp_path / "a.png", 1), img)
    g = image_grid(torch.stack([img, img, img]), columns=2, pad=1)
    assert g.shape == (1, 2 * 6 + 1, 2 * 5 + 1) and torch.equal(g[:, 1:6, 6:10], img)
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "b.png", img.float())


def test_the_feature_cache_takes_images_and_reports_bad_files(tmp_path):
    root = tmp_path / "imgs"
    (root / "three").mkdir(parents=True)
    (root / "seven").mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        _png(root / "three" / f"{k}.png", rng.integers(0, 256, (8, 8)))
        _png(root / "seven" / f"{k}.png", rng.integers(0, 256, (8, 8)))
    _png(root / "seven" / "big.png", np.zeros((9, 9)))
    _png(root / "seven" / "colour.png", np.zeros((8, 8, 3)), "RGB")
    (root / "seven" / "broken.png").write_text("no")
    (root / "seven" / "song.wav").write_bytes(b"RIFF....")  # not searched for by an image codec's scan
    codec = make_codec("image", channels=1, height=8, width=8)
    rep = prepare(root, codec, cache_dir=tmp_path / "cache", workers=1)
    reasons = sorted((b["path"], b["reason"]) for b in rep.bad)
    assert reasons == [("seven/big.png", "wrong_size"), ("seven/broken.png", "unreadable"),
                       ("seven/colour.png", "wrong_channels")]
    assert rep.total == 8 and "9x9" in next(b["detail"] for b in rep.bad if b["reason"] == "wrong_size")
    ds = CachedDataset(tmp_path / "cache", None, 8, "start", pad="silence")
    assert ds.shape == (1, 8, 8) and set(ds.labels("label")) == {"three", "seven"}
    x = ds.example(0, None).x0
    assert x.min() >= -1 and x.max() <= 1
    raw = read_image(root / ds.entries[0]["path"], 1)
    assert torch.allclose(x, raw.float() / 127.5 - 1)  # the image codec's [-1, 1] scaling, nothing else
    again = prepare(root, codec, cache_dir=tmp_path / "cache", workers=1)
    assert again.encoded == 0 and again.unchanged == 8  # incremental, as for audio
    with pytest.raises(ValueError, match="layout 'fsdd' is an audio data set layout"):
        prepare(root, codec, cache_dir=tmp_path / "cache2", layout="fsdd")


def test_an_audio_file_listed_for_an_image_codec_is_a_bad_entry(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    _png(root / "a.png", np.zeros((8, 8)))
    (root / "b.wav").write_bytes(b"RIFF")
    (root / "metadata.jsonl").write_text('{"path": "a.png", "caption": "x"}\n{"path": "b.wav", "caption": "y"}\n')
    rep = prepare(root, make_codec("image", height=8, width=8), cache_dir=tmp_path / "c", workers=1)
    assert [(b["path"], b["reason"]) for b in rep.bad] == [("b.wav", "not_image")]
    assert "an image model takes images" in rep.bad[0]["detail"]


def test_image_codec_size_is_checked():
    with pytest.raises(ValueError, match="both be > 0"):
        make_codec("image", height=8, width=0)
    with pytest.raises(ValueError, match="1 \\(greyscale\\) or 3"):
        make_codec("image", channels=2)
    c = make_codec("image", height=4, width=4)
    with pytest.raises(ValueError, match="takes 4x4 images, got 5x4"):
        c.analyze(torch.zeros(1, 1, 5, 4, dtype=torch.uint8))
