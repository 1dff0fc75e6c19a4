"""``sonodiff corpus build``: the command-line front of :func:`sonodiff.data.corpus.build.build`.

The lead's ``sonodiff/cli.py`` calls :func:`add_parser`; ``python -m sonodiff.data.corpus.cli`` also works.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "cmd_build", "main"]


def _domains(text: str) -> tuple[str, ...]:
    from sonodiff.data.corpus.sources import DOMAINS

    ds = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in ds if d not in DOMAINS]
    if bad or not ds:
        raise argparse.ArgumentTypeError(f"unknown domain(s) {bad or text!r}; valid: {','.join(DOMAINS)}")
    return ds


def cmd_build(args) -> int:
    """Run a build (and ``--verify``); returns the process exit code."""
    from sonodiff.data.corpus.build import BuildConfig, build

    try:
        cfg = BuildConfig(out=args.out, preset=args.preset, seed=args.seed, domains=args.domains,
                          sample_rate=args.sample_rate, seconds=args.seconds, workers=args.workers,
                          limit=args.limit, strict=args.strict)
        summary = build(cfg, log=lambda m: print(m, flush=True))
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.verify:
        from sonodiff.data.corpus.verify import format_report, verify

        report = verify(args.out, workers=args.workers, log=lambda m: print(m, flush=True),
                        max_per_voice=args.verify_per_voice)
        print(format_report(report))
        return 0 if report["ok"] else 2
    print(json.dumps({k: summary[k] for k in ("clips", "counts", "seconds")}))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``corpus`` (with sub-command ``build``) to an ``argparse`` sub-parser set."""
    p = subparsers.add_parser("corpus", help="build the built-in captioned corpus (speech, music, sfx)")
    sub = p.add_subparsers(dest="corpus_command", required=True)
    b = sub.add_parser("build", help="render the corpus into a folder dataset with metadata.jsonl and CORPUS.md")
    b.add_argument("out", help="output folder (resumes a build there with the same settings)")
    b.add_argument("--preset", choices=("small", "medium", "large"), default="small",
                   help="about 200, 5,000 or 50,000 clips (default small)")
    b.add_argument("--seed", type=int, default=0, help="build seed: same seed and sources, same bytes")
    b.add_argument("--domains", type=_domains, default=("speech", "music", "sfx"),
                   help="comma-separated subset of speech,music,sfx (default all)")
    b.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    b.add_argument("--seconds", type=float, default=4.0, help="clip length in seconds (default 4)")
    b.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    b.add_argument("--limit", type=int, default=None,
                   help="build only the first N clips of each domain of the preset (quick checks)")
    b.add_argument("--strict", action="store_true",
                   help="fail before rendering if any source item (voice, soundfont, sample pack, program) is "
                        "missing, naming it and its install command (default: build with what is present)")
    b.add_argument("--verify", action="store_true",
                   help="then check it: Whisper WER per voice, basic-pitch note F1, tempo, silence/clipping")
    b.add_argument("--verify-per-voice", type=int, default=8,
                   help="speech clips per voice transcribed by --verify (default 8)")
    b.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sonodiff")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
