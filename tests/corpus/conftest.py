"""Shared fixture of the corpus tests: one tiny real build (3 clips per domain), reused."""

from __future__ import annotations

import pytest

from tests.corpus.helpers import TINY, require_sources


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """A real build (seed 0, preset small, first 3 clips of each domain, 1 worker) and its summary."""
    require_sources()
    from sonodiff.data.corpus.build import BuildConfig, build

    out = tmp_path_factory.mktemp("corpus") / "seed0"
    logs: list[str] = []
    summary = build(BuildConfig(out=str(out), preset="small", seed=0, limit=TINY, workers=1), log=logs.append)
    return out, summary, logs
