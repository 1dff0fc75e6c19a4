"""Turn a corpus build's ``verify.json`` (written by ``sonodiff corpus build ... --verify``) into Markdown.

Usage: python scripts/corpus_verify_report.py OUT [--voices]
Prints the headline figures (WER per engine, note F1, tempo agreement, file checks) and, with
``--voices``, the word error rate of every voice (for choosing sonodiff.data.corpus.speech.EXCLUDED_VOICES).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--voices", action="store_true")
    a = ap.parse_args()
    rep = json.loads((Path(a.out) / "verify.json").read_text())
    print(f"- clips checked: {rep['clips']}; with file problems (silent, clipped, wrong rate/length): "
          f"{len(rep['file_problems'])}")
    sp = rep.get("speech", {})
    if "per_engine" in sp:
        print(f"- speech WER (Whisper tiny.en) overall {sp['wer_overall']:.3f} on {sp['clips']} clips; "
              "mean per-voice WER by engine: " + ", ".join(f"{e} {w:.3f}" for e, w in sp["per_engine"].items()))
        print(f"- voices with WER > 0.5: {len(sp['unintelligible'])} of {len(sp['per_voice'])}")
    mu = rep.get("music", {})
    if "f1_mean" in mu.get("notes", {}):
        n = mu["notes"]
        print(f"- melody note F1 (basic-pitch, onset ±50 ms, pitch ±50 cents): {n['f1_mean']:.3f} on {n['clips']} clips")
    if "agree_strict" in mu.get("tempo", {}):
        t = mu["tempo"]
        print(f"- tempo agreement (librosa beat_track, ±{100 * t['tolerance']:.0f} %): {t['agree_strict']:.3f} strict, "
              f"{t['agree_octave']:.3f} allowing x2/x0.5, on {t['clips']} clips; strict per kind {t['strict_per_kind']}")
    if a.voices and "per_voice" in sp:
        print("\n| voice | clips | WER |\n|---|---|---|")
        for v, o in sorted(sp["per_voice"].items(), key=lambda kv: kv[1]["wer"]):
            print(f"| {v} | {o['clips']} | {o['wer']:.3f} |")


if __name__ == "__main__":
    main()
