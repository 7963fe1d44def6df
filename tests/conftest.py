"""Shared fixtures: one harness cache per test session (tinycnn trains once) and one sweep."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """One real sweep for the whole session (tests.helpers.TINY_SWEEP); its output directory. Every
    end-to-end test that only reads results reads this one, instead of running its own."""
    from harness.store.results import ResultStore
    from harness.sweep.driver import run_sweep
    from tests.helpers import TINY_SWEEP, sweep_config

    tmp = tmp_path_factory.mktemp("tiny-sweep")
    config = sweep_config(tmp, shared_cache, **TINY_SWEEP)
    with ResultStore(tmp / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
    assert counts == {"ok": 3, "error": 0, "skipped": 0}, counts
    return tmp / "out"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees no GPU, on any machine: for tests whose fakes stand in for CUDA (fake streams, fake
    providers), which the real CUDA runtime of a GPU machine must never meet."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need a CUDA GPU: skipped, with the reason, where torch sees none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With PQ_FAILURE_LOG set, each failure is appended to that file as it happens (test id, phase, the
    end of its traceback): a run stopped at a time limit still tells what failed and why."""
    path = os.environ.get("PQ_FAILURE_LOG")
    if not path or not report.failed or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"== {report.nodeid} [{report.when}]\n{report.longreprtext[-2500:]}\n\n")


@pytest.fixture(autouse=True)
def _gpu_tests_hold_the_gpu(request: pytest.FixtureRequest) -> Any:
    """A gpu-marked test holds the GPU's exclusive harness lock (the one every harness timing window takes),
    so under ``pytest -n`` no other test's GPU work or harness run shares the device while it measures."""
    if "gpu" not in request.keywords:
        yield
        return
    from harness.measure.device_identity import lock_device_id
    from harness.measure.locks import DeviceLock

    with DeviceLock(lock_device_id("cuda")):
        yield
