"""Bad data: every kind is reported with its reason and skipped; --strict fails; the CLI and inspect."""

import argparse
import json
from pathlib import Path

import pytest

from sonodiff.audio.codecs import make_codec
from sonodiff.data.cache import BadDataError, prepare
from sonodiff.data.checks import BadAudio, CheckConfig, read_checked
from sonodiff.data.cli import add_parser
from sonodiff.data.datasets import CachedDataset
from sonodiff.data.inspect import format_inspection, inspect_dataset


def build(tmp_path, make_tone, bad_files):
    root = tmp_path / "ds"
    expected = bad_files(root)
    for i in range(3):
        make_tone(root / f"good{i}.wav", f=300 + 100 * i, seconds=0.5, noise=0.02, seed=i)
    rows = [{"path": p, "caption": f"file {p}"} for p in sorted(expected)]
    rows += [{"path": f"good{i}.wav", "caption": f"good {i}", "label": "tone"} for i in range(3)]
    rows += [{"path": "good0.wav", "caption": "duplicate row"},                 # duplicate path
             {"path": "nocap.wav"}, {"path": "gone.wav", "caption": "gone"}]    # no caption, missing file
    make_tone(root / "nocap.wav")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    expected.update({"nocap.wav": "missing_caption", "gone.wav": "missing_file", "good0.wav": "bad_metadata"})
    return root, expected


def test_every_bad_kind_is_reported_and_skipped(tmp_path, make_tone, bad_files):
    root, expected = build(tmp_path, make_tone, bad_files)
    r = prepare(root, make_codec("mel", n_mels=16), workers=2)
    got = {b["path"]: b["reason"] for b in r.bad}
    assert got == expected
    assert all(b["detail"] for b in r.bad)
    assert (r.added, r.skipped, r.total) == (3, len(expected), 3)
    ds = CachedDataset(r.cache_dir)
    assert sorted(ds[i]["key"] for i in range(len(ds))) == ["good0.wav", "good1.wav", "good2.wav"]
    report = json.loads((Path(r.cache_dir) / "report.json").read_text())
    assert {b["path"]: b["reason"] for b in report["bad"]} == expected
    # bad verdicts are cached by content: a re-run decodes nothing, and reports the same files
    r2 = prepare(root, make_codec("mel", n_mels=16), workers=2)
    assert r2.encoded == 0 and {b["path"]: b["reason"] for b in r2.bad} == expected
    # fixing a bad file makes it an added item
    make_tone(root / "silent.wav", f=700, seconds=0.5)
    r3 = prepare(root, make_codec("mel", n_mels=16), workers=1)
    assert (r3.added, r3.encoded, r3.total) == (1, 1, 4) and "silent.wav" not in {b["path"] for b in r3.bad}


def test_strict_mode_raises_and_keeps_the_index(tmp_path, make_tone, bad_files):
    root, expected = build(tmp_path, make_tone, bad_files)
    with pytest.raises(BadDataError, match=f"{len(expected)} bad entries") as e:
        prepare(root, make_codec("mel", n_mels=16), workers=1, strict=True)
    assert {b["path"] for b in e.value.report.bad} == set(expected)
    assert not (Path(e.value.report.cache_dir) / "index.json").exists()


def test_thresholds_are_configurable(tmp_path, make_tone):
    p = make_tone(tmp_path / "quiet.wav", amp=0.002)  # about -54 dBFS
    with pytest.raises(BadAudio, match="silent"):
        read_checked(p, CheckConfig(silence_db=-50))
    audio, sr = read_checked(p, CheckConfig(silence_db=-70))
    assert sr == 16000 and audio.shape == (1, 8000)
    with pytest.raises(BadAudio, match="too_short"):
        read_checked(p, CheckConfig(min_duration_s=1.0))


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="sonodiff")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepare_and_inspect(tmp_path, make_tone, bad_files, capsys):
    root, expected = build(tmp_path, make_tone, bad_files)
    assert run_cli(["data", "prepare", str(root), "--set", "n_mels=16", "--workers", "1",
                    "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "added 3, changed 0, removed 0, unchanged 0, skipped 11" in out
    for path, reason in expected.items():
        assert f"skipped {path}: {reason}" in out
    assert json.loads((tmp_path / "r.json").read_text())["total"] == 3
    assert run_cli(["data", "prepare", str(root), "--set", "n_mels=16", "--strict"]) == 1
    assert "bad entries (strict mode)" in capsys.readouterr().err
    assert run_cli(["data", "prepare", str(root), "--set", "n_mel=16"]) == 2
    assert "did you mean 'n_mels'" in capsys.readouterr().err
    assert run_cli(["data", "inspect", str(root), "--layout-opt", "valid_fracton=0.1"]) == 2
    assert "valid_fraction" in capsys.readouterr().err
    assert run_cli(["data", "prepare", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()

    assert run_cli(["data", "inspect", str(root), "--json", str(tmp_path / "i.json")]) == 0
    text = capsys.readouterr().out
    r = json.loads((tmp_path / "i.json").read_text())
    assert r["usable"] == 3 and r["labels"] == {"tone": 3} and r["sample_rates"] == {"16000": 3}
    assert {b["path"]: b["reason"] for b in r["bad"]} == expected
    assert "bad entries by reason" in text and "duration histogram" in text


def test_inspect_statistics(tmp_path, make_tone):
    for i, (label, secs) in enumerate([("a", 0.3), ("a", 1.5), ("b", 3.0)]):
        make_tone(tmp_path / label / f"x{i}.wav", sr=8000 * (1 + i % 2), seconds=secs, channels=1 + i // 2)
        (tmp_path / label / f"x{i}.txt").write_text(["a dog barks", "a dog", "rain falls on a dog"][i])
    r = inspect_dataset(tmp_path)
    assert r["usable"] == 3 and r["total_duration_s"] == pytest.approx(4.8)
    assert [h["count"] for h in r["duration_histogram"]][:5] == [1, 0, 1, 1, 0]
    assert r["sample_rates"] == {"8000": 2, "16000": 1} and r["channels"] == {"1": 2, "2": 1}
    c = r["captions"]
    assert (c["count"], c["words_min"], c["words_max"], c["vocabulary"]) == (3, 2, 5, 6)
    top = {w: n for w, n in c["top_words"]}
    assert top["dog"] == 3 and top["a"] == 3 and top["rain"] == 1
    assert r["labels"] == {"a": 2, "b": 1}
    fast = inspect_dataset(tmp_path, full=False)
    assert fast["total_duration_s"] == pytest.approx(4.8)
    assert "labels: 2 classes" in format_inspection(r)


def test_top_level_cli_wiring(tmp_path, make_tone, capsys):
    """``sonodiff data ...`` through the project's own entry point (``sonodiff.cli.main``)."""
    from sonodiff import cli
    make_tone(tmp_path / "ds" / "a.wav")
    (tmp_path / "ds" / "a.txt").write_text("a tone")
    assert cli.main(["data", "inspect", str(tmp_path / "ds")]) == 0
    assert "usable 1" in capsys.readouterr().out
    assert cli.main(["data", "prepare", str(tmp_path / "ds"), "--set", "n_mels=8", "--workers", "1"]) == 0
    assert "added 1, changed 0, removed 0, unchanged 0, skipped 0" in capsys.readouterr().out
