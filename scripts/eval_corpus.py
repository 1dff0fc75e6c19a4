"""Evaluate a text-to-audio model of the built-in corpus: a thin wrapper over `sonodiff generate` and
`sonodiff evaluate` on a protocol manifest.

Generates one clip per clip of ``--protocol`` (default: the 239 held-out sfx clips,
``recipes/protocols/corpus_sfx_heldout.json``) from its caption, named by its clip id (resumable: finished files
are kept), into OUT/gen; then scores them against the protocol's real clips in the corpus once per
``--embedding``: the in-house CLAP (Frechet, KAD, CLAP score) and/or the in-house classifier (accuracy over the
protocol's labels, Frechet, KAD; trained on the reference by `evaluate`, kept in OUT/classifier). Calibration
rows: real train clips of the domain, those clips through the model's codec and vocoder, white noise. Reports:
OUT/evaluate_<embedding>.{md,json}.

    python scripts/eval_corpus.py --model corpus_sfx_mel --corpus runs/corpus --out runs/eval_sfx \
        --embedding clap --embedding classifier
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = {"clap": "frechet,kad,clap", "classifier": "accuracy,frechet,kad", "whisper": "frechet,kad"}


def main() -> int:
    from sonodiff.cli import main as sonodiff

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="corpus_sfx_mel")
    ap.add_argument("--corpus", required=True, help="a folder written by `sonodiff corpus build`")
    ap.add_argument("--protocol", default=str(REPO / "recipes/protocols/corpus_sfx_heldout.json"))
    ap.add_argument("--domain", default="sfx")
    ap.add_argument("--out", default="runs/eval_corpus")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--embedding", action="append", choices=sorted(METRICS), help="repeatable (default: clap)")
    ap.add_argument("--classifier-steps", type=int, default=400)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N generated clips (0 = all)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classifier", help="the in-house classifier's folder (default OUT/classifier; trained there "
                                         "if empty): share one between runs to score several models alike")
    args, generate_opts = ap.parse_known_args()  # anything else goes to `sonodiff generate` (--steps, --cfg, ...)
    out = Path(args.out)
    rc = sonodiff(["generate", "--protocol", args.protocol, "--model", args.model, "--out-dir", str(out / "gen"),
                   "--duration", str(args.duration), "--batch", str(args.batch), *generate_opts])
    if rc:
        return rc
    for emb in args.embedding or ["clap"]:
        rc = sonodiff(["evaluate", str(out / "gen"), "--reference",
                       f"{args.corpus}@split=test+test_heldout,domain={args.domain}", "--metrics", METRICS[emb],
                       "--embedding", emb, "--classifier", args.classifier or str(out / "classifier"),
                       "--classifier-steps", str(args.classifier_steps),
                       "--calibration", f"real train={args.corpus}@split=train,domain={args.domain}",
                       "--limit", str(args.limit), "--resynthesis", args.model,
                       "--json", str(out / f"evaluate_{emb}.json"), "--report", str(out / f"evaluate_{emb}.md")])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
