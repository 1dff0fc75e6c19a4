"""`sonodiff samplers` and `sonodiff schedules`: list what the core offers, by name."""

from __future__ import annotations

import inspect


def _first_doc_line(fn) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0] if doc else ""


def _list_samplers(args) -> int:
    from sonodiff.core import SAMPLERS

    for name, fn in SAMPLERS.items():
        print(f"{name:22s} {_first_doc_line(fn)}")
    return 0


def _list_schedules(args) -> int:
    from sonodiff.core.param import PARAMETERIZATIONS, WEIGHTINGS
    from sonodiff.core.schedules import DENSITIES, SCHEDULES

    print("sampling grids (sonodiff.core.schedules.<name>_sigmas):")
    for name, fn in SCHEDULES.items():
        print(f"  {name:20s} {inspect.signature(fn)}")
    print("training noise densities (sample_sigmas(name, B, ...)):")
    for name, fn in DENSITIES.items():
        print(f"  {name:20s} {_first_doc_line(fn)}")
    print("parameterizations:", ", ".join(PARAMETERIZATIONS))
    print("loss weightings:", ", ".join(WEIGHTINGS))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("samplers", help="list the samplers (names for --sampler and sonodiff.core.sample)")
    p.set_defaults(func=_list_samplers)
    p = sub.add_parser("schedules", help="list sampling grids, training densities, parameterizations and weightings")
    p.set_defaults(func=_list_schedules)
