"""Evaluate a text-to-audio model trained on the built-in corpus with an in-house classifier (not comparable
with published FAD).

1. Train a small CNN on the corpus's held-out clips (splits ``test`` and ``test_heldout`` of one domain, never
   seen in training) to predict each clip's ``label`` (for sfx: 50 classes such as "siren", "bird song").
2. Rows (classifier accuracy; Frechet distance in its embedding space to those held-out clips):
   - "held-out (classifier's own data)": how well the classifier fits what it was trained on;
   - calibration "real train": real training clips (unseen by the classifier) - the floor for real audio;
   - calibration "Griffin-Lim resynthesis": held-out clips through the model's mel codec and Griffin-Lim -
     what the vocoder alone costs;
   - "generated": one clip per held-out caption, generated from that caption; scored against the clip's label.

    python scripts/eval_corpus.py --model corpus_sfx_mel --corpus runs/corpus_sfx --domain sfx --json eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def load_rows(corpus: Path, domain: str, splits: tuple[str, ...]) -> list[dict]:
    meta = corpus / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: --corpus must be a folder written by `sonodiff corpus build`")
    rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if r["domain"] == domain and r["split"] in splits), key=lambda r: r["id"])


def load_clips(corpus: Path, rows: list[dict], sr: int, n: int) -> torch.Tensor:
    from sonodiff.audio.io import load_audio

    out = []
    for r in rows:
        a = load_audio(corpus / r["path"], sample_rate=sr, channels="mono")[0][0]
        out.append(a[:n] if len(a) >= n else torch.nn.functional.pad(a, (0, n - len(a))))
    return torch.stack(out)


def parse_variant(spec: str, args, seconds: float) -> dict:
    v = {"dur": seconds, "window": None, "gi": "model"}
    for part in filter(None, spec.split(",")):
        key, _, val = part.partition("=")
        if key == "dur":
            v["dur"] = float(val)
        elif key == "window":
            v["window"] = float(val)
        elif key == "gi":
            v["gi"] = None if val == "all" else tuple(float(x) for x in val.split(":"))
        else:
            raise SystemExit(f"--variant {spec!r}: unknown key {key!r} (dur, window, gi)")
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="corpus_sfx_mel")
    ap.add_argument("--corpus", required=True, help="a folder written by `sonodiff corpus build`")
    ap.add_argument("--domain", default="sfx", choices=("sfx", "music", "speech"))
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    ap.add_argument("--variant", action="append",
                    help="one 'generated' row per --variant, all scored by the same classifier: comma-separated "
                         "dur=SECONDS (clip length; each training-length segment is scored), window=SECONDS "
                         "(longest one-pass window), gi=LO:HI or gi=all (guidance interval); e.g. "
                         "--variant dur=4,window=2 --variant dur=4,window=4,gi=0.28:5.42")
    ap.add_argument("--limit", type=int, default=None, help="generate for at most this many held-out captions")
    ap.add_argument("--classifier-steps", type=int, default=800)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    from sonodiff.eval.classifier import ClassifierConfig, rows_markdown, score_row, train_classifier
    from sonodiff.pipelines import Pipeline
    from sonodiff.pipelines.decode import features_to_audio

    t0 = time.time()
    corpus = Path(args.corpus)
    pipe = Pipeline.from_pretrained(args.model)
    sr, seconds = pipe.sample_rate, pipe.train_seconds
    n = int(round(seconds * sr))
    held = load_rows(corpus, args.domain, ("test", "test_heldout"))
    train_rows = load_rows(corpus, args.domain, ("train",))
    g = torch.Generator().manual_seed(0)
    train_rows = [train_rows[int(i)] for i in torch.randperm(len(train_rows), generator=g)[: len(held)]]
    labels = tuple(sorted({r["label"] for r in held} | {r["label"] for r in train_rows}))
    held_x, held_l = load_clips(corpus, held, sr, n), [r["label"] for r in held]
    ccfg = ClassifierConfig(labels=labels, sample_rate=sr, seconds=seconds, n_fft=1024 if sr >= 16000 else 512,
                            hop_length=256 if sr >= 16000 else 128)
    clf = train_classifier(held_x, held_l, ccfg, steps=args.classifier_steps, log=print)
    ref = torch.cat([clf.embed(held_x[i:i + 128]).detach() for i in range(0, len(held_x), 128)])
    rows = []

    def row(name, audio, labels_):
        score_row(rows, clf, name, audio, labels_, ref)

    row("held-out (classifier's own data)", held_x, held_l)
    row("calibration: real train", load_clips(corpus, train_rows, sr, n), [r["label"] for r in train_rows])
    with torch.no_grad():
        resyn = features_to_audio(pipe.codec, pipe.codec.encode(held_x[:, None]), length=n)[:, 0]
    row("calibration: Griffin-Lim resynthesis", resyn, held_l)
    gen_rows = held[: args.limit] if args.limit else held
    prompts = [r["caption"] for r in gen_rows]
    variants = args.variant or [""]
    gen_s = 0.0
    model_window = pipe.max_window_seconds
    for spec in variants:
        v = parse_variant(spec, args, seconds)
        v["window"] = v["window"] or model_window
        pipe.config["audio"]["max_window_seconds"] = v["window"]
        segs = max(1, int(v["dur"] / seconds + 1e-6))
        gen, gen_labels = [], []
        t1 = time.time()
        for i in range(0, len(prompts), 25):
            out = pipe(prompts[i:i + 25], seeds=list(range(i, i + len(prompts[i:i + 25]))), num_steps=args.steps,
                       guidance_scale=args.cfg, guidance_interval=v["gi"], duration_s=v["dur"])
            for k in range(segs):
                gen.append(out.audio[:, 0, k * n:(k + 1) * n])
                gen_labels += [r["label"] for r in gen_rows[i:i + 25]]
        dt = time.time() - t1
        gen_s += dt
        what = f"{args.steps} steps"
        if segs > 1:
            what += f", {v['dur']:g} s clips ({segs} segments each) in windows of {v['window']:g} s"
        gi = v["gi"]
        what += "" if gi == "model" else (", guidance every step" if gi is None else f", guidance for {gi[0]:g} < sigma <= {gi[1]:g}")
        row(f"generated ({what}; {dt:.0f} s)", torch.cat(gen), gen_labels)
    print(f"generation {gen_s:.0f} s for {len(prompts)} clips; total {time.time() - t0:.0f} s")
    print(f"\nclassifier: {len(labels)} labels, trained on {len(held)} held-out clips\n")
    print(rows_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "steps": args.steps, "variants": variants,
                                               "cfg": args.cfg, "labels": list(labels),
                                               "classifier_train_clips": len(held), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
