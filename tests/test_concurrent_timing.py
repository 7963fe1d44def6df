"""Two real `harness run` processes on one machine never time at the same time: each timing
window holds the device lock, and the windows stored in both databases prove it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.locks import DeviceLock
from harness.results import ResultStore

REPO = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, cache: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
models: [tinycnn]
datasets: [shapes]
batch_sizes: [1]
backends: {{torch: [fp32]}}
accuracy: false
timing: {{min_seconds: 0, warmup_seconds: 0, warmup: 1, iterations: 20, repeats: 2}}
cache_dir: {cache}
data_root: {tmp_path / 'data'}
out_dir: {tmp_path / name}
""")
    return path


def _windows(db: Path) -> list[tuple[float, float, float]]:
    with ResultStore(db) as store:
        records = list(store.records())
    assert records and all(r.status == "ok" for r in records), [r.error for r in records]
    return [(t.window["start"], t.window["end"], t.window["lock_waited_s"])
            for r in records for t in r.result.timings]


def test_two_harness_processes_never_overlap_timing_windows(tmp_path: Path, shared_cache: Path) -> None:
    from harness.models import load_model

    load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=tmp_path / "data")  # train once
    locks = tmp_path / "locks"
    env = {**os.environ, "PQ_HARNESS_LOCK_DIR": str(locks), "PYTHONUNBUFFERED": "1"}
    waiting = f"waiting for another harness process (pid {os.getpid()}) timing on cpu"
    seen = {name: threading.Event() for name in ("a", "b")}
    output: dict[str, list[str]] = {"a": [], "b": []}

    def read(name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output[name].append(line)
            if waiting in line:
                seen[name].set()

    # This test holds the CPU lock first, so both processes must wait for it and then for each other.
    with DeviceLock("cpu", lock_dir=locks):
        procs = {name: subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config",
                                         str(_config(tmp_path, shared_cache, name))], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name in ("a", "b")}
        readers = [threading.Thread(target=read, args=item, daemon=True) for item in procs.items()]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 600
        while not all(e.is_set() for e in seen.values()) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs.values()):
                break
            time.sleep(0.2)
        both_waited = all(e.is_set() for e in seen.values())
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, "".join(output[name])
    for t in readers:
        t.join(timeout=10)
    assert both_waited, output  # each process said it was waiting, naming the holder

    a, b = _windows(tmp_path / "a" / "results.db"), _windows(tmp_path / "b" / "results.db")
    assert len(a) == len(b) == 2  # compute and e2e
    every = sorted(a + b)
    for (s1, e1, _), (s2, e2, _) in zip(every, every[1:]):
        assert s1 < e1 <= s2 < e2, every  # consecutive windows: one ends before the next starts
    assert a[0][2] > 0 and b[0][2] > 0  # both first windows waited for the lock
