"""Held-out retrieval and zero-shot figures of a CLAP on the built-in corpus (issue 16's table).

- retrieval pool: ``--pool`` clips (evenly spaced over the sorted ids) of the splits ``test`` and ``test_heldout``
  (never trained on; ``test_heldout`` holds combinations never seen in training), every domain; text-to-audio and
  audio-to-text recall@1/5/10 with the chance rate of a random ranking beside each; also per domain;
- zero-shot sound-effect classification: each sfx clip of those splits against the prompts of all 50 sfx labels
  (the label text as is), accuracy with chance 1/50;
- CLAP score calibration: real clips with their own captions, with captions shuffled among clips of the same
  domain, and white noise at the clips' RMS with their captions.

    python scripts/eval_clap.py --clap runs/clap_export --corpus runs/corpus --json runs/eval_clap.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ("{}", "the sound of {}", "sound effect: {}", "a recording of {}")
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clap", required=True, help="CLAP name or directory (in-house or transformers)")
    ap.add_argument("--corpus", required=True, type=Path, help="a folder written by `sonodiff corpus build`")
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--splits", default="test,test_heldout")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sonodiff.audio.io import load_audio
    from sonodiff.eval.clap import load_clap, retrieval_recall, zero_shot_accuracy

    t0 = time.time()
    clap = load_clap(args.clap)
    meta = [json.loads(line) for line in (args.corpus / "metadata.jsonl").read_text().splitlines() if line.strip()]
    splits = set(args.splits.split(","))
    rows = sorted((r for r in meta if r["split"] in splits and r.get("caption")), key=lambda r: r["id"])
    audio = {r["id"]: load_audio(args.corpus / r["path"], sample_rate=clap.sample_rate, channels="mono")[0][0]
             for r in rows}
    emb = dict(zip([r["id"] for r in rows], clap.embed_audio([audio[r["id"]] for r in rows], clap.sample_rate)))
    out = {"clap": str(args.clap), "corpus": args.corpus.name, "splits": sorted(splits), "retrieval": {}}
    pick = np.linspace(0, len(rows) - 1, min(args.pool, len(rows))).round().astype(int)
    pool = [rows[i] for i in pick]
    caps = [r["caption"] for r in pool]
    a = torch.stack([emb[r["id"]] for r in pool])
    t = clap.embed_text(caps)
    out["retrieval"]["all"] = retrieval_recall(a, t, caps)
    for dom in ("speech", "music", "sfx"):
        sub = [i for i, r in enumerate(pool) if r["domain"] == dom]
        if len(sub) > 10:
            out["retrieval"][dom] = retrieval_recall(a[sub], t[sub], [caps[i] for i in sub])
    sfx = [r for r in rows if r["domain"] == "sfx"]
    if sfx:
        labels = sorted({r["label"] for r in meta if r["domain"] == "sfx"})
        lt = clap.embed_text(labels)
        sa = torch.stack([emb[r["id"]] for r in sfx])
        truth = [labels.index(r["label"]) for r in sfx]
        acc = zero_shot_accuracy(sa, lt, truth)
        # prompt ensembling (Radford et al. 2021): the mean text embedding of a few templates per label
        ens = torch.stack([clap.embed_text([t.format(l) for t in TEMPLATES]).mean(0) for l in labels])
        acc_ens = zero_shot_accuracy(sa, torch.nn.functional.normalize(ens, dim=-1), truth)
        out["zero_shot_sfx"] = {"n": len(sfx), "labels": len(labels), "accuracy": acc,
                                "accuracy_template_ensemble": acc_ens, "templates": list(TEMPLATES),
                                "chance": 1 / len(labels)}
    # CLAP score calibration rows on the pool
    g = torch.Generator().manual_seed(args.seed)
    own = (a * t).sum(-1)
    shuf = torch.empty_like(own)
    for dom in {r["domain"] for r in pool}:
        idx = [i for i, r in enumerate(pool) if r["domain"] == dom]
        perm = torch.tensor(idx)[torch.randperm(len(idx), generator=g)]
        shuf[idx] = (a[idx] * t[perm]).sum(-1)
    noise = [torch.randn(len(audio[r["id"]]), generator=g) * audio[r["id"]].pow(2).mean().sqrt() for r in pool]
    na = clap.embed_audio(noise, clap.sample_rate)
    out["clap_score"] = {"real, own captions": float(own.mean()), "real, captions shuffled within domain":
                         float(shuf.mean()), "white noise, the clips' captions": float((na * t).sum(-1).mean())}
    out["seconds"] = round(time.time() - t0, 1)
    lines = ["| pool | clips | distinct captions | t2a R@1 | t2a R@5 | t2a R@10 (chance) | a2t R@1 | a2t R@5 | a2t R@10 (chance) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, r in out["retrieval"].items():
        lines.append(f"| {k} | {r['pool']} | {r['distinct_captions']} | {r['t2a_R@1']:.3f} | {r['t2a_R@5']:.3f} | "
                     f"{r['t2a_R@10']:.3f} ({r['t2a_R@10_chance']:.3f}) | {r['a2t_R@1']:.3f} | {r['a2t_R@5']:.3f} | "
                     f"{r['a2t_R@10']:.3f} ({r['a2t_R@10_chance']:.3f}) |")
    print("\n".join(lines))
    if "zero_shot_sfx" in out:
        z = out["zero_shot_sfx"]
        print(f"\nzero-shot sfx accuracy: {z['accuracy']:.3f} (label text), {z['accuracy_template_ensemble']:.3f} "
              f"(ensemble of {len(TEMPLATES)} templates) on {z['n']} clips, {z['labels']} labels (chance {z['chance']:.3f})")
    print("\nCLAP score: " + "; ".join(f"{k} {v:.3f}" for k, v in out["clap_score"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
