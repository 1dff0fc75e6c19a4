"""Benchmark a text-to-image digits model (the shipped ``mnist_digits`` by default): what its users get.

    .venv/bin/python scripts/bench_mnist.py --model mnist_digits --data runs/data/mnist --out runs/bench_mnist

1. Text-to-image: one image per caption of ``recipes/protocols/mnist_digits_1000.json`` (100 per digit, half "a
   handwritten seven", half "the digit 7"), by ``sonodiff generate --protocol``; scored by ``sonodiff evaluate``:
   in-house classifier accuracy, FID and KID in its embedding against the real training images, with the
   calibration rows "real test" (held-out real digits: the floor) and uniform noise (the ceiling). FID depends on
   the number of images, so the generated set is also scored at the real test set's size (``--limit``).
2. Inpainting of a masked half: every real test digit with its right half regenerated from its caption; PSNR of the
   known half (exactly unchanged: infinite) and the classifier's accuracy on the completed digits, beside the
   accuracy on the half digits with the masked half left black (what the known half alone tells the classifier).
3. Attributes: ``--attr-n`` images per digit for "a thick D" and for "a thin D"; the stroke thickness measured from
   the pixels (:func:`sonodiff.data.bundled.stroke_thickness`), against the real images' captioned the same.

Prints Markdown tables and writes ``OUT/bench_mnist.json`` and ``OUT/bench_mnist.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "recipes" / "protocols" / "mnist_digits_1000.json"


def _run(argv: list[str]) -> None:
    from sonodiff.cli import main

    print("$ sonodiff " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc:
        raise SystemExit(f"sonodiff {argv[0]} failed with exit status {rc}")


def text_to_image(args, out: Path) -> dict:
    gen = out / "gen"
    t = time.time()
    _run(["generate", "--protocol", str(PROTOCOL), "--model", args.model, "--out-dir", str(gen), "--batch", "50",
          "--seed", str(args.seed)])
    gen_s = time.time() - t
    ref, test = f"{args.data}@split=train", f"{args.data}@split=test"
    clf = out / "classifier"
    _run(["evaluate", str(gen), "--reference", ref, "--calibration", f"real test={test}", "--classifier", str(clf),
          "--metrics", "accuracy,frechet,kid", "--json", str(out / "eval_1000.json"), "--report",
          str(out / "eval_1000.md")])
    n_test = sum(1 for line in (Path(args.data) / "metadata.jsonl").read_text().splitlines()
                 if json.loads(line)["split"] == "test")
    _run(["evaluate", str(gen), "--reference", ref, "--calibration", f"real test={test}", "--classifier", str(clf),
          "--metrics", "accuracy,frechet,kid", "--limit", str(n_test), "--no-noise", "--json",
          str(out / f"eval_{n_test}.json")])
    return {"generate_seconds": round(gen_s, 1), "full": json.loads((out / "eval_1000.json").read_text()),
            "same_n": json.loads((out / f"eval_{n_test}.json").read_text()), "classifier": str(clf)}


def inpainting(args, out: Path) -> dict:
    from sonodiff.data.bundled import DIGIT_WORDS
    from sonodiff.eval.evaluate import load_image_set
    from sonodiff.eval.images import embed_and_predict, load_image_classifier, psnr
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    clf = load_image_classifier(out / "classifier")
    test = load_image_set(f"{args.data}@split=test", limit=args.inpaint_n)
    C, H, W = pipe.image_size
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, W // 2:] = True  # regenerate the right half
    done = []
    t = time.time()
    for i, (img, lab) in enumerate(zip(test.images, test.values("label"))):
        g = pipe.inpaint_image(img, mask, f"a handwritten {DIGIT_WORDS[int(lab)]}", seeds=[args.seed + i])
        done.append(g.images[0])
    secs = time.time() - t
    done = torch.stack(done)
    labels = torch.tensor([clf.config.labels.index(v) for v in test.values("label")])
    half = test.images.clone()
    half[..., W // 2:] = 0
    known = ~mask
    p_known = psnr(test.images, done, mask=known)
    acc = {name: float((embed_and_predict(clf, x)[1] == labels).double().mean())
           for name, x in (("inpainted", done), ("known half only (masked half black)", half),
                           ("real (unmasked)", test.images))}
    grid_path = out / "inpaint_examples.png"
    from sonodiff.audio.image_io import image_grid, save_png

    sel = np.unique(np.linspace(0, len(done) - 1, min(16, len(done))).round().astype(int))  # across the digits
    save_png(grid_path, image_grid(torch.cat([test.images[sel], half[sel], done[sel]]), columns=len(sel)))
    return {"n": len(done), "mask": f"right half ({W - W // 2} of {W} columns)", "psnr_known_half_min": float(np.min(p_known.values)),
            "known_half_identical": bool(np.isinf(p_known.values).all()), "accuracy": acc,
            "seconds": round(secs, 1), "examples": grid_path.name}


def attributes(args, out: Path) -> dict:
    from sonodiff.data.bundled import stroke_thickness
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    real = [json.loads(line) for line in (Path(args.data) / "metadata.jsonl").read_text().splitlines()]
    res = {}
    for word in ("thick", "thin"):
        prompts = [f"a {word} {d}" for d in range(10)]
        g = pipe(prompts, num_per_prompt=args.attr_n, seeds=[args.seed + 10_000 + i for i in range(10 * args.attr_n)])
        th = [stroke_thickness(x[0].numpy()) for x in g.images]
        r = [x["thickness"] for x in real if x["caption"].startswith(f"a {word} ")]
        res[word] = {"generated_mean": float(np.mean(th)), "generated_n": len(th), "real_captioned_mean":
                     float(np.mean(r)) if r else None, "real_captioned_n": len(r)}
    res["all_real_mean"] = float(np.mean([x["thickness"] for x in real]))
    return res


def clip_section(args, out: Path) -> dict:
    """The in-house CLIP on the held-out test digits: text->image / image->text recall@1/5/10 by caption, zero-shot
    digit accuracy ("the digit D" for D = 0..9), and the CLIP score of the generated, real and noise sets."""
    from sonodiff.eval import load_clap
    from sonodiff.eval.clap import retrieval_recall, zero_shot_accuracy
    from sonodiff.eval.evaluate import load_image_set

    clip = load_clap(args.clip)
    test = load_image_set(f"{args.data}@split=test")
    emb = clip.embed_images(test.images)
    caps = test.values("caption")
    r = retrieval_recall(emb, clip.embed_text(caps), caps)
    zs = zero_shot_accuracy(emb, clip.embed_text([f"the digit {d}" for d in range(10)]),
                            [int(v) for v in test.values("label")])
    _run(["evaluate", str(out / "gen"), "--reference", f"{args.data}@split=train", "--calibration",
          f"real test={args.data}@split=test", "--metrics", "clip", "--clip", str(args.clip), "--json",
          str(out / "eval_clip.json")])
    return {"retrieval_test": r, "zero_shot_digit_accuracy": zs, "n_test": len(test),
            "score": json.loads((out / "eval_clip.json").read_text())}


def markdown(r: dict) -> str:
    from sonodiff.eval.evaluate import IMAGE_METRIC_TITLES, Report

    lines = ["## Text-to-image: 1,000 captioned digits", "",
             Report(**{k: r["t2i"]["full"][k] for k in ("settings", "rows", "notes")},
                    titles=IMAGE_METRIC_TITLES).to_markdown().split("\n", 2)[2], "",
             f"At the real test set's size ({r['t2i']['same_n']['rows'][0]['n']} generated images, evenly spaced over "
             "the protocol):", "",
             Report(**{k: r["t2i"]["same_n"][k] for k in ("settings", "rows", "notes")},
                    titles=IMAGE_METRIC_TITLES).to_markdown().split("\n", 2)[2], ""]
    ip = r["inpaint"]
    lines += ["## Inpainting the right half of real test digits", "",
              f"{ip['n']} digits, mask: {ip['mask']}; known half unchanged in every image: "
              f"{ip['known_half_identical']} (minimum PSNR {ip['psnr_known_half_min']}).", "",
              "| rows | classifier accuracy |", "|---|---|",
              *[f"| {k} | {v:.3f} |" for k, v in ip["accuracy"].items()], ""]
    a = r["attributes"]
    lines += ["## Attribute captions: stroke thickness (pixels) measured from the images", "",
              "| caption | generated mean (n) | real images with that caption: mean (n) |", "|---|---|---|",
              *[f"| a {w} D | {a[w]['generated_mean']:.2f} ({a[w]['generated_n']}) | "
                f"{a[w]['real_captioned_mean']:.2f} ({a[w]['real_captioned_n']}) |" for w in ("thick", "thin")],
              f"| all real images | | {a['all_real_mean']:.2f} |", ""]
    if "clip" in r:
        c, t = r["clip"], r["clip"]["retrieval_test"]
        lines += ["## The in-house CLIP on the held-out test digits", "",
                  f"{c['n_test']} test images, {t['distinct_captions']} distinct captions; zero-shot digit accuracy "
                  f"(\"the digit D\"): {c['zero_shot_digit_accuracy']:.3f} (chance 0.100).", "",
                  "| direction | R@1 | R@5 | R@10 | R@10 by chance |", "|---|---|---|---|---|",
                  f"| text -> image | {t['t2a_R@1']:.3f} | {t['t2a_R@5']:.3f} | {t['t2a_R@10']:.3f} | "
                  f"{t['t2a_R@10_chance']:.3f} |",
                  f"| image -> text | {t['a2t_R@1']:.3f} | {t['a2t_R@5']:.3f} | {t['a2t_R@10']:.3f} | - |", "",
                  Report(**{k: c["score"][k] for k in ("settings", "rows", "notes")},
                         titles=IMAGE_METRIC_TITLES).to_markdown().split("\n", 2)[2], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist_digits")
    ap.add_argument("--data", default="runs/data/mnist", help="the bundled MNIST folder (written if absent)")
    ap.add_argument("--out", default="runs/bench_mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inpaint-n", type=int, default=500)
    ap.add_argument("--attr-n", type=int, default=20)
    ap.add_argument("--clip", default="clip_mnist", help="the in-house CLIP for retrieval and the CLIP score ('' = skip)")
    ap.add_argument("--only", choices=["clip"], help="run only this section (the others' results are kept)")
    args = ap.parse_args(argv)
    from sonodiff.data.bundled import build_bundled

    torch.set_num_threads(max(1, torch.get_num_threads()))
    build_bundled("mnist", args.data, log=print)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "clip":
        r = json.loads((out / "bench_mnist.json").read_text())
    else:
        r = {"model": args.model, "data": args.data, "t2i": text_to_image(args, out)}
        r["inpaint"] = inpainting(args, out)
        r["attributes"] = attributes(args, out)
    if args.clip:
        r["clip"] = clip_section(args, out)
    md = markdown(r)
    print(md)
    from sonodiff.utils.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "bench_mnist.json", r, indent=1)
    atomic_write_text(out / "bench_mnist.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
