"""Speech and pitch metrics of `sonodiff evaluate` on real recordings: WER (faster-whisper tiny.en), speaker
similarity (resemblyzer) and pitch accuracy (torchcrepe), each against a calibration it must beat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonodiff.eval.evaluate import evaluate, normalize_text

FSDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fsdd"
QUIET = lambda *a, **k: None  # noqa: E731


def test_text_normalisation_spells_digits_and_drops_punctuation():
    assert normalize_text("Seven.") == "seven"
    assert normalize_text(" 7 ") == "seven"
    assert normalize_text("It's 3, OK?") == "it's three ok"


@pytest.mark.slow
@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_wer_and_speaker_similarity_on_real_spoken_digits(tmp_path):
    # six test takes of two speakers as the evaluated set (fields from the fsdd layout: transcript, speaker)
    ref = f"{FSDD}@split=test,speaker=jackson+theo"
    gen = tmp_path / "gen"
    gen.mkdir()
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for d in (1, 4, 7):
        for spk in ("jackson", "theo"):
            x, sr = sf.read(FSDD / "recordings" / f"{d}_{spk}_0.wav", dtype="float32")
            sf.write(gen / f"{d}_{spk}.wav", x, sr)
            (gen / f"{d}_{spk}.json").write_text(json.dumps({"prompt": str(d), "transcript": words[d], "speaker": spk}))
    rep = evaluate(str(gen), ref, metrics=("wer", "speaker", "kad"), embedding="whisper", bootstrap=0, layout="fsdd",
                   log=QUIET)
    real, noise = rep.rows
    assert real["metrics"]["wer"]["value"] <= 0.34  # whisper tiny.en on isolated 8 kHz digits: most right
    assert noise["metrics"]["wer"]["value"] >= 0.8
    assert real["metrics"]["speaker"]["against"] == "speaker centroids"
    assert real["metrics"]["kad"]["value"] < noise["metrics"]["kad"]["value"]  # in the Whisper encoder's space
    assert "Whisper tiny.en encoder" in rep.settings["embedding_description"]
    assert real["metrics"]["speaker"]["value"] > noise["metrics"]["speaker"]["value"] + 0.05
    # the same clips labelled with the other speaker score lower than with their own
    for f in gen.glob("*.json"):
        d = json.loads(f.read_text())
        f.write_text(json.dumps({**d, "speaker": "theo" if d["speaker"] == "jackson" else "jackson"}))
    swapped = evaluate(str(gen), ref, metrics=("speaker",), noise=False, layout="fsdd", log=QUIET).rows[0]
    assert swapped["metrics"]["speaker"]["value"] < real["metrics"]["speaker"]["value"] - 0.05


def test_pitch_accuracy_against_the_clip_note(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    sr = 16000
    t = np.arange(sr) / sr
    for i, (midi, f_off) in enumerate([(69, 0.0), (60, 0.0), (72, 0.0), (64, 0.7)]):  # the last 70 cents sharp
        f = 440 * 2 ** ((midi - 69) / 12) * 2 ** (f_off / 12)
        x = 0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)
        sf.write(gen / f"n{i}.wav", x.astype(np.float32), sr)
        (gen / f"n{i}.json").write_text(json.dumps({"prompt": "a note", "note": midi}))
    rep = evaluate(str(gen), str(gen), metrics=("pitch",), bootstrap=0, noise=False, log=QUIET)
    m = rep.rows[0]["metrics"]["pitch"]
    assert m["value"] == pytest.approx(0.75) and m["n"] == 4
    # note names work as well as MIDI numbers
    (gen / "n0.json").write_text(json.dumps({"prompt": "a note", "note": "A4"}))
    assert evaluate(str(gen), str(gen), metrics=("pitch",), noise=False, log=QUIET).rows[0]["metrics"]["pitch"][
        "value"] == pytest.approx(0.75)
