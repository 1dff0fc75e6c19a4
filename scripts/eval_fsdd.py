"""Evaluate a spoken-digit model honestly with an in-house classifier (not comparable with published FAD).

1. Train a small CNN on the real FSDD *test* split (takes 0-4), which the diffusion model never saw.
2. Rows (accuracy of the classifier; Frechet distance in its embedding space to the real test split):
   - calibration "real train": real FSDD train audio (unseen by the classifier) - the floor for real data;
   - calibration "Griffin-Lim resynthesis": real test audio through the model's mel codec and Griffin-Lim -
     what the vocoder alone costs;
   - "generated": N clips per digit from the model.

    python scripts/eval_fsdd.py --model fsdd_digits_mel --fsdd ../shared/data/fsdd --per-digit 30 --json eval.json
    python scripts/eval_fsdd.py --model fsdd_digits_mel runs/fsdd_new --per-digit 10   # two models, one classifier
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def load_split(root: Path, sr: int, split: str, limit_per_digit: int | None = None):
    from sonodiff.audio.io import load_audio
    from sonodiff.data.layouts import scan

    items = [it for it in scan(root, "fsdd").items if it.split == split]
    items.sort(key=lambda it: it.key)
    if limit_per_digit:
        per: dict[str, list] = {}
        for it in items:
            per.setdefault(it.label, []).append(it)
        items = [it for v in per.values() for it in v[:limit_per_digit]]
    audio = [load_audio(root / it.path, sample_rate=sr, channels="mono")[0][0] for it in items]
    return audio, [it.label for it in items]


def fix_length(audio: list[torch.Tensor], n: int) -> torch.Tensor:
    return torch.stack([a[:n] if len(a) >= n else torch.nn.functional.pad(a, (0, n - len(a))) for a in audio])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["fsdd_digits_mel"],
                    help="model(s); each gets its generated rows, all scored by one classifier (the first model's "
                         "codec makes the resynthesis row)")
    ap.add_argument("--fsdd", default="../shared/data/fsdd")
    ap.add_argument("--per-digit", type=int, default=30)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, nargs="+", default=[None],
                    help="guidance scale(s); one generated row each (default: the model's)")
    ap.add_argument("--classifier-steps", type=int, default=800)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    from sonodiff.eval.classifier import ClassifierConfig, rows_markdown, score_row, train_classifier
    from sonodiff.pipelines import Pipeline
    from sonodiff.pipelines.decode import features_to_audio

    t0 = time.time()
    pipes = [Pipeline.from_pretrained(m) for m in args.model]
    pipe = pipes[0]
    sr = pipe.sample_rate
    root = Path(args.fsdd)
    n = int(round(pipe.train_seconds * sr))
    test_a, test_l = load_split(root, sr, "test")
    train_a, train_l = load_split(root, sr, "train", limit_per_digit=30)  # 300 clips, as many as the test split
    labels = tuple(str(d) for d in range(10))
    cfg = ClassifierConfig(labels=labels, sample_rate=sr, seconds=pipe.train_seconds)
    test_x = fix_length(test_a, n)
    clf = train_classifier(test_x, test_l, cfg, steps=args.classifier_steps, log=print)
    ref = torch.cat([clf.embed(test_x[i:i + 256]).detach() for i in range(0, len(test_x), 256)])
    rows = []

    def row(name, audio, labels_):
        score_row(rows, clf, name, audio, labels_, ref)

    row("real test (classifier's own data)", test_x, test_l)
    row("calibration: real train", fix_length(train_a, n), train_l)
    with torch.no_grad():
        z = pipe.codec.encode(test_x[:, None])
        resyn = features_to_audio(pipe.codec, z, length=n)[:, 0]
    row("calibration: Griffin-Lim resynthesis", resyn, test_l)
    gen_l = [d for d in labels for _ in range(args.per_digit)]
    for name, p in zip(args.model, pipes):
        if p.sample_rate != sr or p.train_seconds != pipe.train_seconds:
            raise SystemExit(f"--model {name}: {p.sample_rate} Hz / {p.train_seconds} s differs from the first model's")
        for g in args.cfg:
            gen = []
            for i in range(0, len(gen_l), 50):
                chunk = gen_l[i:i + 50]
                out = p(chunk, seeds=list(range(i, i + len(chunk))), num_steps=args.steps, guidance_scale=g)
                gen.append(out.audio[:, 0])
            g_used = p.config["sampling"]["guidance_scale"] if g is None else g
            tag = f"{name}, " if len(pipes) > 1 else ""
            row(f"generated ({tag}{args.steps} steps, cfg {g_used:g})", torch.cat(gen), gen_l)
    print(f"total {time.time() - t0:.0f} s")
    print("\n" + rows_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "steps": args.steps, "cfg": args.cfg, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
