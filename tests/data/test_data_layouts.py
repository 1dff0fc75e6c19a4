"""Standard layouts on tiny fixture folders, and FSDD on the real shared copy when present."""

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

from sonodiff.data.items import hash_split
from sonodiff.data.layouts import LAYOUTS, scan


def test_ljspeech(tmp_path, make_tone):
    rows = ["LJ001-0001|Printing, in the only sense|Printing, in the only sense",
            "LJ001-0002|in being comparatively modern.|in being comparatively modern.",
            "LJ002-0003|Mr. Smith said 1820|Mister Smith said eighteen twenty",
            "LJ003-0004|no audio for this one|no audio for this one",
            "broken line without pipes"]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    for uid in ("LJ001-0001", "LJ001-0002", "LJ002-0003"):
        make_tone(tmp_path / "wavs" / f"{uid}.wav", sr=22050)
    s = scan(tmp_path, "ljspeech")
    by = {i.key: i for i in s.items}
    assert sorted(by) == ["LJ001-0001", "LJ001-0002", "LJ002-0003"]
    it = by["LJ002-0003"]
    assert it.caption == it.transcript == "Mister Smith said eighteen twenty"
    assert it.meta["raw_transcript"] == "Mr. Smith said 1820" and it.speaker == "LJ"
    assert it.path == "wavs/LJ002-0003.wav" and it.split == hash_split("wavs/LJ002-0003.wav")
    assert sorted(p.reason for p in s.problems) == ["bad_metadata", "missing_file"]


def test_esc50(tmp_path, make_tone):
    (tmp_path / "meta").mkdir()
    rows = [("1-100032-A-0.wav", 1, 0, "dog"), ("2-100038-A-14.wav", 2, 14, "chirping_birds"),
            ("5-103415-A-2.wav", 5, 2, "pig"), ("4-99999-A-0.wav", 4, 0, "dog")]
    with open(tmp_path / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for name, fold, target, cat in rows:
            w.writerow([name, fold, target, cat, "True", name.split("-")[1], "A"])
            make_tone(tmp_path / "audio" / name, sr=44100)
    s = scan(tmp_path, "esc50")
    by = {i.key: i for i in s.items}
    assert by["2-100038-A-14.wav"].caption == "chirping birds" and by["2-100038-A-14.wav"].label == "chirping_birds"
    assert {k: i.split for k, i in by.items()} == {"1-100032-A-0.wav": "train", "2-100038-A-14.wav": "train",
                                                  "5-103415-A-2.wav": "test", "4-99999-A-0.wav": "train"}
    assert by["5-103415-A-2.wav"].meta["fold"] == 5 and by["5-103415-A-2.wav"].meta["target"] == "2"
    s4 = scan(tmp_path, "esc50", test_fold=4)
    assert [i.key for i in s4.items if i.split == "test"] == ["4-99999-A-0.wav"]
    assert Counter(i.label for i in s.items) == {"dog": 2, "chirping_birds": 1, "pig": 1}


def test_audiocaps(tmp_path, make_tone):
    (tmp_path / "csv").mkdir()
    tables = {
        "train": [("91139", "r1nicOVtvkQ", "130", "A woman talks nearby as water pours")],
        "val": [("97151", "vfY_TJq7n_U", "130", "Rustling occurs, ducks quack"),
                ("97152", "vfY_TJq7n_U", "130", "Ducks quack while wind blows")],
        "test": [("103549", "AAAAAAAAAAA", "0", "A clip that was never downloaded"),
                 ("103550", "zzz123", "30", "An engine revs")],
    }
    for name, rows in tables.items():
        with open(tmp_path / "csv" / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            w.writerows(rows)
    make_tone(tmp_path / "audio" / "train" / "r1nicOVtvkQ.wav")          # by youtube id
    make_tone(tmp_path / "audio" / "val" / "vfY_TJq7n_U_130.flac")      # by youtube id + start
    make_tone(tmp_path / "audio" / "test" / "103550.wav")               # by audiocap id
    s = scan(tmp_path, "audiocaps")
    by = {i.key: i for i in s.items}
    assert sorted(by) == ["103550", "91139", "97151", "97152"]
    assert by["97151"].path == by["97152"].path == "audio/val/vfY_TJq7n_U_130.flac"
    assert by["97152"].caption == "Ducks quack while wind blows" and by["97152"].split == "valid"
    assert by["91139"].split == "train" and by["103550"].split == "test"
    assert by["103550"].meta["youtube_id"] == "zzz123"
    assert [(p.key, p.reason) for p in s.problems] == [("103549", "missing_file")]


def test_fsdd_fixture(tmp_path, make_tone):
    for digit, spk, take in [(0, "jackson", 0), (7, "theo", 4), (7, "theo", 5), (9, "nicolas", 49)]:
        make_tone(tmp_path / "recordings" / f"{digit}_{spk}_{take}.wav", sr=8000)
    make_tone(tmp_path / "recordings" / "notes.wav", sr=8000)
    s = scan(tmp_path, "fsdd")
    by = {i.key: i for i in s.items}
    assert {k: (i.label, i.speaker, i.split) for k, i in by.items()} == {
        "recordings/0_jackson_0.wav": ("0", "jackson", "test"), "recordings/7_theo_4.wav": ("7", "theo", "test"),
        "recordings/7_theo_5.wav": ("7", "theo", "train"), "recordings/9_nicolas_49.wav": ("9", "nicolas", "train")}
    assert by["recordings/7_theo_5.wav"].caption == "spoken digit seven"
    assert by["recordings/7_theo_5.wav"].transcript == "seven"
    assert [(p.path, p.reason) for p in s.problems] == [("recordings/notes.wav", "bad_metadata")]


def test_unknown_layout_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid: .*esc50"):
        scan(tmp_path, "librispeech")
    assert set(LAYOUTS) == {"folder", "ljspeech", "esc50", "audiocaps", "fsdd"}
    with pytest.raises(ValueError, match="valid: \\['test_fold'\\]"):
        scan(tmp_path, "esc50", tets_fold=3)
    for name in ("ljspeech", "esc50", "audiocaps", "fsdd"):
        with pytest.raises(ValueError, match="not"):
            scan(tmp_path, name)


def shared_data_dir() -> Path:
    """``$SONODIFF_SHARED_DATA``, else ``<repo>/../shared/data`` (where CI and developers keep it)."""
    env = os.environ.get("SONODIFF_SHARED_DATA")
    return Path(env) if env else (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


FSDD = shared_data_dir() / "fsdd"


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(),
                    reason=f"real FSDD not found at {FSDD} (set SONODIFF_SHARED_DATA or place ../shared/data/fsdd "
                           "beside the checkout)")
def test_fsdd_real_data_official_split():
    s = scan(FSDD, "fsdd")
    assert len(s.items) == 3000 and not s.problems
    assert Counter(i.split for i in s.items) == {"train": 2700, "test": 300}
    assert Counter(i.label for i in s.items) == {str(d): 300 for d in range(10)}
    assert len({i.speaker for i in s.items}) == 6
    assert all((i.split == "test") == (i.meta["take"] < 5) for i in s.items)


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"real FSDD not found at {FSDD}")
def test_fsdd_real_recordings_pass_the_bad_file_checks_and_prepare(tmp_path):
    """No false positives on real speech; features of real files are cached and loadable."""
    import shutil

    from sonodiff.audio.codecs import make_codec
    from sonodiff.data.cache import prepare
    from sonodiff.data.checks import read_checked
    from sonodiff.data.datasets import CachedDataset

    items = scan(FSDD, "fsdd").items[::10]
    for it in items:
        audio, sr = read_checked(FSDD / it.path)
        assert sr == 8000 and audio.shape[0] == 1
    (tmp_path / "recordings").mkdir()
    for it in items[:40]:
        shutil.copy(FSDD / it.path, tmp_path / it.path)
    r = prepare(tmp_path, make_codec("mel", n_mels=40), layout="fsdd", workers=1)
    assert (r.total, r.skipped) == (40, 0)
    ds = CachedDataset(r.cache_dir, split="train")
    assert len(ds) == sum(it.split == "train" for it in items[:40]) and ds[0]["x"].shape[:2] == (1, 40)
