"""The Ray executor on a local Ray cluster (CPU only, two fake GPUs): same cells as the local
executor, one whole GPU per GPU unit, a killed worker loses no cell and runs none twice, and
--resume after a killed driver finishes the sweep. Tiny sweeps: tinycnn on shapes, few images."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import load_config
from harness.store.results import ResultStore
from harness.sweep.driver import run_sweep
from harness.sweep.observer import SweepObserver
from harness.sweep.plan import plan_cells
from tests.helpers import REPO, repo_env, write_config

ray = pytest.importorskip("ray")

from harness.sweep.executors.ray_executor import RayExecutor, UnitResources  # noqa: E402
from tests.helpers import BROKEN_AT_INFERENCE, committed_cells

pytestmark = pytest.mark.slow  # real sweeps on a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    """A private local cluster: 2 CPUs and 2 fake GPUs (logical resources; nothing uses CUDA)."""
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _overrides(tmp_path: Path, cache: Path) -> dict:
    return {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [2, 4], "backends": {"torch": ["fp32"]},
        "pruners": [{"method": "l1", "amounts": [0.3, 0.6]}], "max_eval_samples": 24,
        "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 2, "repeats": 1, "definitions": ["e2e"]},
        "cache_dir": cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out", "device_checks": False,
    }


class Recorder(SweepObserver):
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.plan: tuple[int, int] | None = None

    def planned(self, cells: int, skipped: int) -> None:
        self.plan = (cells, skipped)

    def cell_done(self, outcome) -> None:
        self.keys.append(outcome.key)


def _statuses(db: Path) -> dict[str, str]:
    with ResultStore(db) as store:
        return {r.key: r.status for r in store.records()}


def _fake_gpu(unit) -> UnitResources:
    return UnitResources(num_cpus=1, num_gpus=1)  # as a unit with a CUDA cell asks


def _broken_model(tmp_path: Path) -> str:
    """A model whose inference fails after the load-time probe: its cells are recorded failed."""
    path = tmp_path / "broken.py"
    path.write_text(BROKEN_AT_INFERENCE)
    return f"{path}:build"


def test_ray_sweep_matches_local_and_gives_each_gpu_unit_its_own_gpu(ray_cluster, tmp_path: Path,
                                                                     shared_cache: Path) -> None:
    overrides = _overrides(tmp_path, shared_cache)
    overrides["models"] = ["tinycnn", _broken_model(tmp_path)]
    local_cfg = load_config(None, {**overrides, "out_dir": tmp_path / "local"})
    ray_cfg = load_config(None, {**overrides, "out_dir": tmp_path / "ray", "executor": {"kind": "ray"}})

    with ResultStore(tmp_path / "local" / "results.db") as store:
        local_counts = run_sweep(local_cfg, store, resume=False)
    recorder = Recorder()
    with ResultStore(tmp_path / "ray" / "results.db") as store:
        ray_counts = run_sweep(ray_cfg, store, recorder, resume=False,
                               executor=RayExecutor(ray_cfg, recorder, resources=_fake_gpu))
        records = list(store.records())

    local, remote = _statuses(tmp_path / "local" / "results.db"), _statuses(tmp_path / "ray" / "results.db")
    assert remote == local and len(remote) == len(plan_cells(ray_cfg)) == 12
    assert sorted(set(remote.values())) == ["error", "ok"]  # both kinds of outcome travel back
    assert ray_counts == local_counts and sorted(recorder.keys) == sorted(remote)
    assert recorder.plan == (12, 0)

    runs: dict[tuple, dict] = {}  # one entry per unit run: its GPU and when it held it
    for r in records:
        if r.status != "ok":
            continue
        node = r.result.node
        assert node["executor"] == "ray" and node["hostname"] == socket.gethostname()
        assert len(node["gpu_ids"]) == 1, node  # num_gpus=1: exactly one whole GPU
        run = runs.setdefault((node["worker_pid"], node["unit_started_at"]),
                              {"gpu": node["gpu_ids"][0], "start": node["unit_started_at"], "end": 0.0})
        run["end"] = max(run["end"], node["cell_finished_at"])
    assert len(runs) == 3  # tinycnn's three pruning steps (every cell of the broken model failed)
    spans = sorted(runs.values(), key=lambda x: x["start"])
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a["gpu"] == b["gpu"]:
                assert a["end"] <= b["start"], f"two units held GPU {a['gpu']} at once: {a} {b}"
    with ResultStore(tmp_path / "local" / "results.db") as store:
        assert all(r.result.node["executor"] == "local" for r in store.records() if r.status == "ok")


class KillOnce:
    """Kills the worker process after the first outcome of the first unit that gets here (once per
    test: a marker file remembers it), i.e. mid-unit, with a cell still to run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, unit, outcome) -> None:
        if len(unit.cells) > 1 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_is_retried_and_every_cell_is_committed_once(ray_cluster, tmp_path: Path,
                                                                   shared_cache: Path) -> None:
    config = load_config(None, {**_overrides(tmp_path, shared_cache), "executor": {"kind": "ray", "max_retries": 1}})
    marker = tmp_path / "killed"
    recorder = Recorder()
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, recorder, resume=False,
                           executor=RayExecutor(config, recorder, hook=KillOnce(marker)))
        records = list(store.records())
    assert marker.exists(), "the hook never killed a worker"
    planned = {c.identity(config).key for c in plan_cells(config)}
    assert counts == {"ok": len(planned), "error": 0, "skipped": 0}
    assert sorted(recorder.keys) == sorted(planned)  # each cell committed exactly once
    assert {r.key for r in records} == planned and all(r.status == "ok" for r in records)
    killed = int(marker.read_text())
    assert any(r.result.node["worker_pid"] != killed for r in records)


def test_worker_dying_beyond_the_retries_fails_its_remaining_cells(ray_cluster, tmp_path: Path,
                                                                   shared_cache: Path) -> None:
    overrides = {**_overrides(tmp_path, shared_cache), "pruners": [], "executor": {"kind": "ray", "max_retries": 0}}
    config = load_config(None, overrides)
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, Recorder(), resume=False,
                           executor=RayExecutor(config, SweepObserver(), hook=KillOnce(tmp_path / "killed")))
        records = {r.identity.batch_size: r for r in store.records()}
    assert counts == {"ok": 1, "error": 1, "skipped": 0}
    assert records[2].status == "ok"
    assert records[4].status == "error" and "died 1 times (executor.max_retries=0)" in records[4].error


def test_resume_after_killing_the_driver_finishes_the_rest(ray_cluster, tmp_path: Path,
                                                           shared_cache: Path) -> None:
    cfg = write_config(tmp_path / "sweep.yaml", f"""
models: [tinycnn]
datasets: [shapes]
batch_sizes: [2, 4]
backends: {{torch: [fp32]}}
pruners: [{{method: l1, amounts: [0.3, 0.6]}}]
max_eval_samples: 24
device_checks: false
timing: {{min_seconds: 0, warmup_seconds: 0, warmup: 0, iterations: 2, repeats: 1, definitions: [e2e]}}
cache_dir: {shared_cache}
data_root: {tmp_path / 'data'}
out_dir: {tmp_path / 'out'}
""")
    cmd = [sys.executable, "-m", "harness.cli", "run", "--config", str(cfg), "--executor", "ray",
           "--address", ray_cluster]
    env = repo_env()
    db = tmp_path / "out" / "results.db"
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while committed_cells(db) == 0 and driver.poll() is None:
            time.sleep(0.2)
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    first = committed_cells(db)
    assert 1 <= first < 6
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    statuses = _statuses(db)
    assert len(statuses) == 6 and set(statuses.values()) == {"ok"}
    assert f"{6 - _skipped(done.stdout)} ok, 0 failed, {_skipped(done.stdout)} skipped" in done.stdout
    assert _skipped(done.stdout) == first  # every cell committed before the kill, and only those, was skipped


def _skipped(stdout: str) -> int:
    import re

    m = re.search(r"(\d+) skipped \(resume\)", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1))
