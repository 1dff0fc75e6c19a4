"""`sonodiff evaluate GEN_DIR --reference REF_DIR ...` (see :mod:`sonodiff.eval.evaluate`)."""

from __future__ import annotations

import sys

__all__ = ["add_parser"]


def _calibration(specs: list[str]) -> dict[str, str]:
    out = {}
    for s in specs or []:
        name, eq, spec = s.partition("=")
        if not eq or not name or not spec:
            raise ValueError(f"--calibration {s!r}: expected NAME=DIR (e.g. 'real train=runs/corpus@split=train')")
        out[name] = spec
    return out


def _evaluate(args) -> int:
    from sonodiff.eval.evaluate import evaluate

    try:
        from sonodiff.eval.evaluate import evaluate_images, is_image_set

        if is_image_set(args.generated):
            audio_only = [f for f, v in (("--embedding", args.embedding != "classifier"),
                                         ("--resynthesis", args.resynthesis), ("--loudness", args.loudness != "none"))
                          if v]
            if audio_only:
                raise ValueError(f"{', '.join(audio_only)} apply to audio; {args.generated} holds images")
            metrics = [m.strip() for m in (args.metrics or "accuracy,frechet,kid").split(",") if m.strip()]
            report = evaluate_images(args.generated, args.reference, metrics=metrics,
                                     calibration=_calibration(args.calibration), noise=not args.no_noise,
                                     classifier=args.classifier, classifier_steps=args.classifier_steps,
                                     bootstrap=args.bootstrap, seed=args.seed, layout=args.layout, limit=args.limit,
                                     protocol=args.protocol, clip=args.clip,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
            return _write(report, args)
        metrics = [m.strip() for m in (args.metrics or "frechet,kad").split(",") if m.strip()]
        report = evaluate(args.generated, args.reference, metrics=metrics, embedding=args.embedding,
                          calibration=_calibration(args.calibration), resynthesis=args.resynthesis,
                          noise=not args.no_noise, classifier=args.classifier, clap=args.clap,
                          classifier_steps=args.classifier_steps, loudness=args.loudness, bootstrap=args.bootstrap,
                          seed=args.seed, layout=args.layout, limit=args.limit, protocol=args.protocol,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _write(report, args)


def _write(report, args) -> int:
    from sonodiff.utils.atomic import atomic_write_json, atomic_write_text

    md = report.to_markdown()
    print(md)
    if args.json:
        atomic_write_json(args.json, report.to_dict(), indent=1)
    if args.report:
        atomic_write_text(args.report, md)
    return 0


def add_parser(sub) -> None:
    from sonodiff.eval.evaluate import EMBEDDINGS, IMAGE_METRICS, METRICS

    p = sub.add_parser("evaluate", help="score generated clips or images against real ones, with calibration rows",
                       description="Score the clips of GEN (a folder; DIR@key=value,... filters on fields) against "
                                   "--reference: distribution distances in an embedding, class accuracy, CLAP "
                                   "score, speech and pitch metrics, paired reconstruction metrics; calibration rows "
                                   "(another real set, resynthesis, white noise) are scored the same way.")
    p.add_argument("generated", help="folder of clips to evaluate (JSON sidecars or a dataset layout give fields)")
    p.add_argument("--reference", required=True, help="real clips: DIR or DIR@split=test,domain=sfx")
    p.add_argument("--metrics", help=f"comma-separated, from {','.join(METRICS)} (default frechet,kad); for a folder "
                                     f"of images from {','.join(IMAGE_METRICS)} (default accuracy,frechet,kid)")
    p.add_argument("--embedding", default="classifier", choices=EMBEDDINGS, help="embedding of frechet and kad")
    p.add_argument("--calibration", action="append", metavar="NAME=DIR",
                   help="another real set scored as a calibration row (repeatable)")
    p.add_argument("--resynthesis", metavar="MODEL",
                   help="a mel model: the first calibration set (else the reference) through its codec and vocoder")
    p.add_argument("--no-noise", action="store_true", help="leave out the white-noise calibration row")
    p.add_argument("--classifier", metavar="DIR",
                   help="in-house classifier directory; trained on the reference's labels and saved there if absent")
    p.add_argument("--classifier-steps", type=int, default=600)
    p.add_argument("--clap", default="clap_corpus", help="CLAP name or directory (in-house or transformers)")
    p.add_argument("--clip", default="clip_mnist", help="images: the in-house CLIP (name or directory) of --metrics clip")
    p.add_argument("--loudness", default="none", help="'none' or 'rms:DB': each clip to DB dBFS RMS before scoring")
    p.add_argument("--bootstrap", type=int, default=200, help="resamplings of the distribution metrics' intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="folder", help="dataset layout of the reference and calibration folders")
    p.add_argument("--limit", type=int, default=0, help="score only the first N clips of each set (0 = all)")
    p.add_argument("--protocol", metavar="MANIFEST",
                   help="a protocol manifest (JSON or JSONL of clip ids and captions): exactly those clips are scored")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--report", help="write the report as Markdown")
    p.set_defaults(func=_evaluate)
