"""Vocoders side by side on held-out real audio: quality (PESQ, STOI, multi-resolution mel distance, in-house
digit accuracy) and speed (real-time factor at batch 1 on this CPU), all in one run.

Sets (each optional):
- ``--fsdd DIR``: the FSDD test takes (takes 0-4; no vocoder or diffusion model trains on them), 8 kHz, at
  fsdd_digits_mel's mel settings. PESQ narrow-band. Digit accuracy: an in-house classifier trained on FSDD
  *train* takes scores the resynthesised test takes (and the real ones: the calibration row).
- ``--corpus DIR``: a built corpus's ``test`` + ``test_heldout`` clips (16 kHz; ``--domains``), at
  corpus_sfx_mel's mel settings. PESQ wide-band (and narrow-band), per domain rows as well.

Rows per set: Griffin-Lim at the shipped settings, and each ``--vocoder SET=NAME_OR_DIR`` (repeatable), which must
voice that set's mel settings. Calibration rows: the real audio itself (PESQ 4.5 / STOI 1 by construction,
the classifier's ceiling) and white noise at the clips' RMS (the floor).

    python scripts/bench_vocoder.py --fsdd ../shared/data/fsdd --corpus runs/corpus \\
        --vocoder fsdd=vocoder_8k --vocoder corpus=vocoder_16k --out runs/bench_vocoder
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def mr_mel_distance(a: torch.Tensor, b: torch.Tensor, sr: int) -> float:
    """Mean L1 distance of natural-log mels at three resolutions (sonodiff.eval.metrics.mel_distance)."""
    from sonodiff.eval.metrics import mel_distance

    return mel_distance(a, b, sr)


def quality(ref: list[torch.Tensor], deg: list[torch.Tensor], sr: int) -> dict:
    from pesq import pesq
    from pystoi import stoi

    nb, wb, md, fails = [], [], [], 0
    for r, d in zip(ref, deg):
        r64, d64 = r.double().numpy(), d.double().numpy()
        try:
            nb.append(pesq(sr, r64, d64, "nb"))
            if sr == 16000:
                wb.append(pesq(sr, r64, d64, "wb"))
        except Exception:  # noqa: BLE001 - PESQ refuses some clips (no utterance found); counted, not hidden
            fails += 1
        md.append(mr_mel_distance(r, d, sr))
    # STOI needs at least 30 frames of 384 ms after its silent-frame removal, more than one short clip has (pystoi
    # returns 1e-5 for those): it is computed once over the concatenated clips, each pair aligned as it is.
    st = stoi(torch.cat(ref).double().numpy(), torch.cat(deg).double().numpy(), sr, extended=False)
    row = {"n": len(ref), "pesq_nb": float(np.mean(nb)) if nb else float("nan"), "stoi": float(st),
           "mel_distance": float(np.mean(md)), "pesq_failures": fails}
    if sr == 16000:
        row["pesq_wb"] = float(np.mean(wb)) if wb else float("nan")
    return row


def voice(voc, clips: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """Each clip analysed and voiced at batch 1; (outputs, real-time factor = audio seconds / wall seconds)."""
    from sonodiff.audio.features import log_mel

    mel = voc.mel_config
    out, t = [], 0.0
    with torch.no_grad():
        for c in clips:
            lm = log_mel(c, mel)[None, None]
            t0 = time.perf_counter()
            y = voc(lm, length=c.shape[-1])
            t += time.perf_counter() - t0
            out.append(y.reshape(-1).float())
    secs = sum(c.shape[-1] for c in clips) / mel.sample_rate
    return out, secs / max(t, 1e-9)


def load_fsdd(root: Path, sr: int, split: str, per_digit: int | None = None):
    from sonodiff.audio.io import load_audio
    from sonodiff.data.layouts import scan

    items = sorted((it for it in scan(root, "fsdd").items if it.split == split), key=lambda it: it.key)
    if per_digit:
        per: dict[str, list] = {}
        for it in items:
            per.setdefault(it.label, []).append(it)
        items = [it for v in per.values() for it in v[:per_digit]]
    return [load_audio(root / it.path, sample_rate=sr, channels="mono")[0][0] for it in items], [it.label for it in items]


def load_corpus(root: Path, sr: int, domains: list[str], limit: int):
    from sonodiff.audio.io import load_audio

    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines() if x.strip()]
    rows = sorted((r for r in rows if r["split"] in ("test", "test_heldout") and r["domain"] in domains),
                  key=lambda r: r["id"])
    per: dict[str, list] = {}
    for r in rows:
        per.setdefault(r["domain"], []).append(r)
    rows = [r for d in domains for r in per.get(d, [])[:limit]]
    return [load_audio(root / r["path"], sample_rate=sr, channels="mono")[0][0] for r in rows], [r["domain"] for r in rows]


def digit_classifier(root: Path, sr: int, out: Path, steps: int, log):
    """In-house classifier trained on FSDD train takes (cached in OUT/classifier_train)."""
    from safetensors.torch import load_file

    from sonodiff.eval.classifier import AudioClassifier, ClassifierConfig, train_classifier
    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

    cfg = ClassifierConfig(labels=tuple(str(d) for d in range(10)), sample_rate=sr, seconds=0.75)
    d = out / "classifier_train"
    if (d / "meta.json").is_file() and json.loads((d / "meta.json").read_text()).get("steps") == steps:
        clf = AudioClassifier(cfg)
        clf.load_state_dict(load_file(str(d / "model.safetensors")))
        return clf.eval()
    audio, labels = load_fsdd(root, sr, "train", per_digit=150)
    clf = train_classifier(fix(audio, int(0.75 * sr)), labels, cfg, steps=steps, log=log)
    atomic_save_tensors(d / "model.safetensors", {k: v.contiguous() for k, v in clf.state_dict().items()})
    atomic_write_json(d / "meta.json", {"steps": steps, "train": "FSDD train, 150 takes per digit"})
    return clf.eval()


def fix(audio: list[torch.Tensor], n: int) -> torch.Tensor:
    return torch.stack([a[:n] if len(a) >= n else torch.nn.functional.pad(a, (0, n - len(a))) for a in audio])


def accuracy(clf, audio: list[torch.Tensor], labels: list[str], sr: int) -> float:
    with torch.no_grad():
        pred = torch.cat([clf(fix(audio[i:i + 128], int(0.75 * sr))).argmax(1) for i in range(0, len(audio), 128)])
    truth = torch.tensor([clf.config.labels.index(lab) for lab in labels])
    return (pred == truth).double().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fsdd", help="FSDD folder (8 kHz set)")
    ap.add_argument("--corpus", help="a built corpus folder (16 kHz set)")
    ap.add_argument("--domains", default="speech,music,sfx")
    ap.add_argument("--per-domain", type=int, default=60, help="held-out corpus clips per domain")
    ap.add_argument("--fsdd-model", default="fsdd_digits_mel", help="its codec sets the 8 kHz mel settings")
    ap.add_argument("--corpus-model", default="corpus_sfx_mel", help="its codec sets the 16 kHz mel settings")
    ap.add_argument("--vocoder", action="append", default=[], metavar="SET=NAME_OR_DIR",
                    help="a vocoder to compare on set fsdd or corpus (repeatable)")
    ap.add_argument("--classifier-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_vocoder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731

    from sonodiff.audio.codecs import load_codec
    from sonodiff.models.vocoders import load_vocoder, mel_config_of
    from sonodiff.models import resolve_model

    extra: dict[str, list[str]] = {"fsdd": [], "corpus": []}
    for v in args.vocoder:
        s, _, name = v.partition("=")
        if s not in extra or not name:
            raise SystemExit(f"--vocoder {v!r}: expected fsdd=NAME_OR_DIR or corpus=NAME_OR_DIR")
        extra[s].append(name)
    results = {"argv": sys.argv[1:], "threads": args.threads, "cpu_count": os.cpu_count(), "sets": {}}
    sets = []
    if args.fsdd:
        sets.append(("fsdd", args.fsdd_model))
    if args.corpus:
        sets.append(("corpus", args.corpus_model))
    if not sets:
        raise SystemExit("give --fsdd and/or --corpus")
    lines = ["| set | vocoder | params | n | PESQ nb | PESQ wb | STOI | mel distance | digit accuracy | x real time "
             "(batch 1) | vs Griffin-Lim speed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for set_name, model in sets:
        mel = mel_config_of(load_codec(resolve_model(model) / "codec").config)
        sr = mel.sample_rate
        if set_name == "fsdd":
            clips, labels = load_fsdd(Path(args.fsdd), sr, "test")
            groups = None
            clf = digit_classifier(Path(args.fsdd), sr, out, args.classifier_steps, log)
        else:
            clips, labels = load_corpus(Path(args.corpus), sr, args.domains.split(","), args.per_domain)
            groups, clf = labels, None
        log(f"{set_name}: {len(clips)} held-out clips at {sr} Hz ({sum(len(c) for c in clips) / sr / 60:.1f} min)")
        rows = {}
        torch.manual_seed(0)
        calib = {"real audio": clips,
                 "white noise (clip RMS)": [torch.randn(len(c)) * c.pow(2).mean().sqrt() for c in clips]}
        for name, deg in calib.items():
            rows[name] = {**quality(clips, deg, sr), "calibration": True}
            if clf is not None:
                rows[name]["digit_accuracy"] = accuracy(clf, deg, labels, sr)
        gl_rtf = None
        for name in ["griffin_lim", *extra[set_name]]:
            voc = load_vocoder(name, expect=mel)
            t0 = time.time()
            deg, rtf = voice(voc, clips)
            row = {**quality(clips, deg, sr), "x_real_time": rtf, "wall_s": round(time.time() - t0, 1)}
            net = getattr(voc, "net", None)
            row["params"] = sum(p.numel() for p in net.parameters()) if net is not None else 0
            if clf is not None:
                row["digit_accuracy"] = accuracy(clf, deg, labels, sr)
            if groups is not None:
                row["per_domain"] = {g: quality([c for c, x in zip(clips, groups) if x == g],
                                                [d for d, x in zip(deg, groups) if x == g], sr)
                                     for g in sorted(set(groups))}
            if name == "griffin_lim":
                gl_rtf = rtf
            row["speed_vs_griffin_lim"] = rtf / gl_rtf
            rows[name] = row
            log(f"{set_name} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
        results["sets"][set_name] = {"sample_rate": sr, "mel": mel.__dict__, "rows": rows}
        for name, r in rows.items():
            f = lambda k, p=2: f"{r[k]:.{p}f}" if k in r and not math.isnan(r[k]) else "-"  # noqa: E731
            lines.append(f"| {set_name} | {name} | {r.get('params', 0) / 1e6:.2f} M | {r['n']} | {f('pesq_nb')} | "
                         f"{f('pesq_wb')} | {f('stoi', 3)} | {f('mel_distance', 3)} | {f('digit_accuracy', 3)} | "
                         f"{f('x_real_time', 0)} | {f('speed_vs_griffin_lim', 1)} |")
            for g, q in r.get("per_domain", {}).items():
                lines.append(f"| {set_name}: {g} | {name} | | {q['n']} | {q['pesq_nb']:.2f} | "
                             f"{q.get('pesq_wb', float('nan')):.2f} | {q['stoi']:.3f} | {q['mel_distance']:.3f} | | | |")
    table = "\n".join(lines)
    results["table"] = table
    from sonodiff.utils.atomic import atomic_write_json

    atomic_write_json(out / "results.json", results, indent=1)
    print(table)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
