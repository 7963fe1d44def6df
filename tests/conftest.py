"""Shared fixtures: one harness cache per test session, so tinycnn trains once."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, write_config  # noqa: F401 - for plugins that still look here


def onnxruntime_distribution() -> importlib.metadata.Distribution | None:
    """The onnxruntime this interpreter would import (first on sys.path), read without importing it."""
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def pytest_report_header() -> str:
    """Says which onnxruntime the run uses (the version matrix checks this line in its subprocesses)."""
    dist = onnxruntime_distribution()
    if dist is None:
        return "onnxruntime: not installed"
    return f"onnxruntime {dist.version} at {Path(str(dist.locate_file(''))).resolve()}"


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
