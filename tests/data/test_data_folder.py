"""The generic folder format, the hash split, segments and the decoding dataset."""

import csv
import json
from collections import Counter

import pytest
import torch

from sonodiff.data.datasets import FolderDataset, crop_or_pad, pad_collate
from sonodiff.data.items import hash_split, scan_folder
from sonodiff.data.layouts import scan


def test_metadata_jsonl_fields_split_override_and_problems(tmp_path, make_tone):
    for name in ("a.wav", "sub/b.flac", "c.ogg", "d.wav"):
        make_tone(tmp_path / name)
    rows = [
        {"path": "a.wav", "caption": "a dog barks", "label": "dog", "speaker": "s1", "transcript": "woof",
         "split": "test_heldout", "license": "CC0", "duration_hint": 0.5},
        {"path": "sub/b.flac", "caption": "rain on a roof", "split": "valid"},
        {"path": "c.ogg", "caption": ""},              # caption missing -> reported
        {"path": "missing.wav", "caption": "ghost"},   # file missing -> reported
        {"path": "d.wav", "caption": "a bell"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    s = scan_folder(tmp_path)
    by = {it.path: it for it in s.items}
    assert sorted(by) == ["a.wav", "d.wav", "sub/b.flac"]
    a = by["a.wav"]
    assert (a.caption, a.label, a.speaker, a.transcript, a.split) == ("a dog barks", "dog", "s1", "woof",
                                                                      "test_heldout")
    assert a.meta == {"license": "CC0", "duration_hint": 0.5}
    assert by["sub/b.flac"].split == "valid" and by["d.wav"].split == hash_split("d.wav")
    reasons = {(p.path, p.reason) for p in s.problems}
    assert reasons == {("c.ogg", "missing_caption"), ("missing.wav", "missing_file"),
                       ("metadata.jsonl", "bad_metadata")}


def test_metadata_csv_and_jsonl_precedence(tmp_path, make_tone):
    make_tone(tmp_path / "x.wav")
    make_tone(tmp_path / "y.wav")
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "caption", "label", "mood"])
        w.writeheader()
        w.writerow({"path": "x.wav", "caption": "calm hum", "label": "hum", "mood": "calm"})
        w.writerow({"path": "y.wav", "caption": "loud hum", "label": "hum", "mood": "loud"})
    s = scan_folder(tmp_path)
    assert [(i.path, i.caption, i.meta["mood"]) for i in s.items] == [("x.wav", "calm hum", "calm"),
                                                                     ("y.wav", "loud hum", "loud")]
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"path": "y.wav", "caption": "from jsonl"}) + "\n")
    s = scan_folder(tmp_path)
    assert [(i.path, i.caption) for i in s.items] == [("y.wav", "from jsonl")]
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("file|text\nx.wav|hi\n")
    with pytest.raises(ValueError, match="ljspeech"):
        scan_folder(tmp_path)


def test_sidecar_captions_and_class_folders(tmp_path, make_tone):
    side = tmp_path / "side"
    make_tone(side / "one.wav")
    (side / "one.txt").write_text("  first clip \n")
    make_tone(side / "deep/two.flac")
    (side / "deep/two.txt").write_text("second clip")
    make_tone(side / "three.wav")  # no sidecar while others have one -> missing caption
    make_tone(side / ".hidden/ignored.wav")
    s = scan_folder(side)
    assert {(i.path, i.caption) for i in s.items} == {("one.wav", "first clip"), ("deep/two.flac", "second clip")}
    assert [(p.path, p.reason) for p in s.problems] == [("three.wav", "missing_caption")]

    cls = tmp_path / "cls"
    for label in ("dog", "cat"):
        for k in range(3):
            make_tone(cls / label / f"{k}.wav")
    make_tone(cls / "dog" / "puppies" / "p.wav")
    s = scan(cls, "folder")
    assert Counter(i.label for i in s.items) == {"dog": 4, "cat": 3} and not s.problems
    assert all(i.caption is None for i in s.items)
    s = scan_folder(cls, require_captions=True)
    assert not s.items and {p.reason for p in s.problems} == {"missing_caption"}


def test_hash_split_is_deterministic_and_proportional():
    keys = [f"clips/{i:05d}.wav" for i in range(20000)]
    splits = [hash_split(k, 0.1, 0.2) for k in keys]
    assert splits == [hash_split(k, 0.1, 0.2) for k in keys]
    c = Counter(splits)
    assert abs(c["test"] / 20000 - 0.2) < 0.015 and abs(c["valid"] / 20000 - 0.1) < 0.015
    # growing the test fraction only moves train items into test
    bigger = [hash_split(k, 0.1, 0.25) for k in keys]
    moved = [(a, b) for a, b in zip(splits, bigger) if a != b]
    assert moved and all((a, b) == ("train", "test") for a, b in moved)
    with pytest.raises(ValueError):
        hash_split("x", 0.6, 0.5)


def test_crop_or_pad_and_collate():
    x = torch.arange(10.0)[None]
    y, m = crop_or_pad(x, 4, "start")
    assert torch.equal(y, x[:, :4]) and bool(m.all())
    y, m = crop_or_pad(x, 4, "center")
    assert torch.equal(y, x[:, 3:7])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(crop_or_pad(x, 4, "random", g1)[0], crop_or_pad(x, 4, "random", g2)[0])
    offs = {int(crop_or_pad(x, 4, "random", torch.Generator().manual_seed(s))[0][0, 0]) for s in range(50)}
    assert offs == set(range(7))  # every valid offset is reachable, none beyond
    y, m = crop_or_pad(x, 13, "random")
    assert y.shape == (1, 13) and torch.equal(y[:, :10], x) and float(y[:, 10:].abs().sum()) == 0
    assert m.tolist() == [True] * 10 + [False] * 3
    b = pad_collate([{"x": torch.ones(1, 3), "mask": torch.ones(3, dtype=torch.bool), "caption": "a"},
                     {"x": torch.ones(1, 5), "mask": torch.ones(5, dtype=torch.bool), "caption": "b"}])
    assert b["x"].shape == (2, 1, 5) and b["mask"].sum(1).tolist() == [3, 5] and b["caption"] == ["a", "b"]


def test_folder_dataset_resamples_crops_and_is_seeded(tmp_path, make_tone):
    for i in range(4):
        make_tone(tmp_path / f"c{i}.wav", sr=8000, seconds=1.0 + 0.25 * i, channels=2, noise=0.1, seed=i)
        (tmp_path / f"c{i}.txt").write_text(f"clip {i}")
    ds = FolderDataset(tmp_path, sample_rate=16000, channels="mono", segment_s=0.5, crop="random", seed=7)
    ex = ds[2]
    assert ex["x"].shape == (1, 8000) and ex["mask"].all() and ex["caption"] == "clip 2" and ex["label"] == ""
    assert torch.equal(ds[2]["x"], ex["x"])  # same seed, epoch, index -> same crop
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["x"], ex["x"])
    long = FolderDataset(tmp_path, sample_rate=16000, channels="stereo", segment_s=2.0, crop="start")
    e = long[0]
    assert e["x"].shape == (2, 32000) and int(e["mask"].sum()) == 16000
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["x"].shape == (2, 1, 8000) and len(batch["caption"]) == 2
