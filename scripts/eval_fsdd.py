"""Evaluate a spoken-digit model: a thin wrapper over `sonodiff generate` and `sonodiff evaluate`.

Generates ``--per-digit`` clips of every digit (seeds from ``--seed``; resumable: finished files are kept) into
OUT/gen, then scores them against the real FSDD test takes (300, never seen by the model) once per
``--embedding``: the in-house classifier (accuracy, Frechet, KAD; trained on the test takes by `evaluate` and
kept in OUT/classifier) and/or Whisper tiny.en's encoder (Frechet, KAD). Calibration rows: real train takes,
those takes through the model's codec and vocoder, white noise. Reports: OUT/evaluate_<embedding>.{md,json}.

    python scripts/eval_fsdd.py --model fsdd_digits_mel --fsdd ../shared/data/fsdd --out runs/eval_fsdd \
        --embedding classifier --embedding whisper
"""

import argparse
import sys
from pathlib import Path

METRICS = {"classifier": "accuracy,frechet,kad", "whisper": "frechet,kad", "clap": "frechet,kad"}


def main() -> int:
    from sonodiff.cli import main as sonodiff

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fsdd_digits_mel")
    ap.add_argument("--fsdd", default="../shared/data/fsdd")
    ap.add_argument("--out", default="runs/eval_fsdd")
    ap.add_argument("--per-digit", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--embedding", action="append", choices=sorted(METRICS), help="repeatable (default: classifier)")
    ap.add_argument("--classifier-steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=28)
    args, generate_opts = ap.parse_known_args()  # anything else goes to `sonodiff generate` (--steps, --cfg, ...)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "digits.txt").write_text("".join(f"{d}\n" for d in range(10)))
    rc = sonodiff(["generate", "--prompts", str(out / "digits.txt"), "-n", str(args.per_digit), "--model", args.model,
                   "--out-dir", str(out / "gen"), "--seed", str(args.seed), "--batch", str(args.batch), *generate_opts])
    if rc:
        return rc
    for emb in args.embedding or ["classifier"]:
        rc = sonodiff(["evaluate", str(out / "gen"), "--reference", f"{args.fsdd}@split=test", "--layout", "fsdd",
                       "--metrics", METRICS[emb], "--embedding", emb, "--classifier", str(out / "classifier"),
                       "--classifier-steps", str(args.classifier_steps),
                       "--calibration", f"real train={args.fsdd}@split=train", "--limit", str(10 * args.per_digit),
                       "--resynthesis", args.model, "--json", str(out / f"evaluate_{emb}.json"),
                       "--report", str(out / f"evaluate_{emb}.md")])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
