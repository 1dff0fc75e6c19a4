"""``sonodiff data prepare|inspect``: argparse wiring. Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "parse_assignments"]

LAYOUT_NAMES = ("folder", "ljspeech", "esc50", "audiocaps", "fsdd")
AUDIO_CODECS = ("mel", "waveform")


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``["n_mels=64", "mel_scale=htk", "f_max=null"]`` -> dict; values are parsed as JSON, else kept as
    strings (used by ``--set`` and ``--layout-opt``)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"expected KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", default="folder", choices=LAYOUT_NAMES,
                   help="dataset layout (default: folder = metadata.jsonl/csv, sidecar .txt or class sub-folders)")
    p.add_argument("--require-captions", action="store_true",
                   help="folder layout: every entry needs a caption even if the folder declares none")
    p.add_argument("--layout-opt", action="append", metavar="KEY=VALUE",
                   help="layout option, e.g. --layout-opt test_fold=1 (esc50), --layout-opt valid_fraction=0.1")
    p.add_argument("--silence-db", type=float, default=-60.0, help="peak (dBFS) at or below which a file is silent")
    p.add_argument("--clip-fraction", type=float, default=0.01,
                   help="fraction of samples at full scale above which a file is badly clipped")
    p.add_argument("--min-duration", type=float, default=0.0, help="shorter files are bad (seconds)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full report as JSON")


def _check_config(args):
    from sonodiff.data.checks import CheckConfig

    return CheckConfig(silence_db=args.silence_db, clip_fraction=args.clip_fraction,
                       min_duration_s=args.min_duration)


def _layout_options(args) -> dict[str, Any]:
    opts = parse_assignments(args.layout_opt or [])
    if args.require_captions:
        if args.layout != "folder":
            raise ValueError(f"--require-captions applies to the folder layout; {args.layout!r} always needs them")
        opts["require_captions"] = True
    return opts


def cmd_prepare(args) -> int:
    from sonodiff.audio.codecs import make_codec
    from sonodiff.data.cache import BadDataError, prepare
    from sonodiff.utils.atomic import atomic_write_json

    try:
        opts = parse_assignments(args.set or [])
        if args.sample_rate is not None:
            opts["sample_rate"] = args.sample_rate
        codec = make_codec(args.codec, **opts)
        report = prepare(args.dir, codec, cache_dir=args.cache, layout=args.layout,
                         layout_options=_layout_options(args), workers=args.workers, strict=args.strict,
                         check=_check_config(args), quality=args.resample_quality, rehash=args.rehash,
                         durable=args.durable,
                         log=lambda s: print(s, flush=True))
    except BadDataError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.json:
            from dataclasses import asdict

            atomic_write_json(args.json, asdict(e.report), indent=1, sort_keys=True)
        return 1
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for b in report.bad[:50]:
        print(f"skipped {b['path']}: {b['reason']} ({b['detail']})")
    if len(report.bad) > 50:
        print(f"... and {len(report.bad) - 50} more skipped (see {report.cache_dir}/report.json)")
    print(report.summary())
    print(f"cache: {report.cache_dir}")
    if args.json:
        from dataclasses import asdict

        atomic_write_json(args.json, asdict(report), indent=1, sort_keys=True)
    return 0


def cmd_inspect(args) -> int:
    from sonodiff.data.inspect import format_inspection, inspect_dataset
    from sonodiff.utils.atomic import atomic_write_json

    try:
        r = inspect_dataset(args.dir, layout=args.layout, full=not args.fast, check=_check_config(args),
                            layout_options=_layout_options(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_inspection(r))
    if args.json:
        atomic_write_json(args.json, r, indent=1, sort_keys=True)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` with sub-commands ``prepare`` and ``inspect`` to an argparse ``subparsers`` object.
    Each leaf sets ``func(args) -> int`` (exit code: 0 ok, 1 bad data under --strict, 2 usage error)."""
    data = subparsers.add_parser("data", help="prepare feature caches and inspect datasets")
    sub = data.add_subparsers(dest="data_command", metavar="{prepare,inspect}")
    sub.required = True

    p = sub.add_parser("prepare", help="precompute features into an incremental, crash-safe cache",
                       description="Encode every new or changed audio file of DIR with a codec into a cache "
                                   "keyed by content hash and codec config; drop deleted files; skip and list "
                                   "bad files. Safe to interrupt and re-run.")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--codec", default="mel", choices=AUDIO_CODECS)
    p.add_argument("--sample-rate", type=int, default=None, help="codec sample rate in Hz (default: the codec's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="codec config field, e.g. --set n_mels=64 --set mel_scale=htk (repeatable)")
    p.add_argument("--cache", default=None, help="cache folder (default: DIR/.sonodiff_cache)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--strict", action="store_true", help="bad files are errors (exit code 1) instead of skipped")
    p.add_argument("--durable", action="store_true",
                   help="flush every new feature file to disk before the index (survives power cuts; slower)")
    p.add_argument("--rehash", action="store_true", help="re-hash every file even if size and mtime are unchanged")
    p.add_argument("--resample-quality", default="high", choices=("fast", "high"),
                   help="torchaudio resampling preset (see sonodiff.audio.io.RESAMPLE_QUALITY)")
    _check_args(p)
    p.set_defaults(func=cmd_prepare)

    q = sub.add_parser("inspect", help="counts, durations, sample rates, captions, labels and bad files",
                       description="Summarise a dataset folder and list its bad files.")
    q.add_argument("dir", help="dataset folder")
    q.add_argument("--fast", action="store_true", help="read headers only (skips silent/clipped/NaN checks)")
    _check_args(q)
    q.set_defaults(func=cmd_inspect)
    return data


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m sonodiff.data.cli data prepare ...``) for use before or
    without the top-level ``sonodiff`` CLI."""
    parser = argparse.ArgumentParser(prog="sonodiff")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
