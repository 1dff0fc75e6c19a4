"""`sonodiff <command>`: the command line. It mirrors the Python API.

Each command lives in the module of its subsystem, which exposes ``add_parser(subparsers)`` registering one
top-level command whose parsed args carry ``func(args) -> int``. Those modules import heavy libraries inside
their functions, so ``sonodiff --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

# Subsystem modules providing `add_parser(subparsers)`; listed once, resolved in order.
COMMAND_MODULES: tuple[str, ...] = (
    "sonodiff.core.cli",
    "sonodiff.data.cli",
    "sonodiff.data.corpus.cli",
    "sonodiff.training.cli",
    "sonodiff.pipelines.cli",
    "sonodiff.pipelines.resynth",
    "sonodiff.eval.cli",
    "sonodiff.serve.cli",
    "sonodiff.serve.listen",
    "sonodiff.serve.demo",
)


def build_parser() -> argparse.ArgumentParser:
    from sonodiff import __version__

    parser = argparse.ArgumentParser(
        prog="sonodiff",
        description="Diffusion models for audio and other modalities.",
    )
    parser.add_argument("--version", action="version", version=f"sonodiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only tolerate the command module itself being absent (a subsystem not built yet), never a broken import.
            if e.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # a prompt written after the options (`sonodiff inpaint IMG --mask M.png "a seven"`): argparse leaves an optional
    # positional that follows options unparsed; it is taken as the prompt when the command has one left empty
    if len(extra) == 1 and not extra[0].startswith("-") and getattr(args, "prompt", "") is None:
        args.prompt, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
