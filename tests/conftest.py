"""Shared fixtures: one harness cache per test session (tinycnn trains once) and one sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO, write_config  # noqa: F401 - for plugins that still look here


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A harness cache shared by the whole test session (shapes data + tinycnn weights).

    Set PQ_TEST_CACHE to reuse one across runs while developing.
    """
    env = os.environ.get("PQ_TEST_CACHE")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """One real sweep for the whole session (tests.helpers.TINY_SWEEP); its output directory. Every
    end-to-end test that only reads results reads this one, instead of running its own."""
    from harness.driver import run_sweep
    from harness.results import ResultStore
    from tests.helpers import TINY_SWEEP, sweep_config

    tmp = tmp_path_factory.mktemp("tiny-sweep")
    config = sweep_config(tmp, shared_cache, **TINY_SWEEP)
    with ResultStore(tmp / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
    assert counts == {"ok": 3, "error": 0, "skipped": 0}, counts
    return tmp / "out"
