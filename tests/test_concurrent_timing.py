"""Two real `harness run` processes on one machine never time at the same time, and never time while
the other does heavy work: each timing window holds the device lock exclusively, all other heavy work
(load, prune, session build, accuracy pass, profiling) holds it shared, and the windows and heavy-work
intervals stored in both databases prove it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.measure.locks import DeviceLock
from harness.store.results import ResultStore

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.slow  # two real harness processes timing at once


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
    """The locked windows (an interleaved block is one window shared by its cells' timings)."""
    with ResultStore(db) as store:
        records = list(store.records())
    assert records and all(r.status == "ok" for r in records), [r.error for r in records]
    return sorted({(t.window["start"], t.window["end"], t.window["lock_waited_s"])
                   for r in records for t in r.result.timings})


def _heavy(db: Path) -> list[tuple[float, float, str]]:
    with ResultStore(db) as store:
        records = list(store.records())
    return sorted({(h["start"], h["end"], h["what"]) for r in records
                   for h in (r.result.extra.get("heavy_work") or [])})


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
    assert len(a) == len(b) == 1  # compute and e2e interleaved in one locked block
    every = sorted(a + b)
    for (s1, e1, _), (s2, e2, _) in zip(every, every[1:]):
        assert s1 < e1 <= s2 < e2, every  # consecutive windows: one ends before the next starts


def _run_config(tmp_path: Path, cache: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
models: [tinycnn]
datasets: [shapes]
batch_sizes: [1, 8]
backends: {{ort-cpu: [fp32]}}
pruners: [{{method: l1-global, amounts: [0.3, 0.6]}}]
max_eval_samples: 120
timing: {{min_seconds: 0.05, warmup_seconds: 0.01, warmup: 1, iterations: 10, repeats: 3}}
cache_dir: {cache}
data_root: {tmp_path / 'data'}
out_dir: {tmp_path / name}
""")
    return path


@pytest.mark.slow
def test_no_window_overlaps_the_other_process_heavy_work(tmp_path: Path, shared_cache: Path) -> None:
    from harness.models import load_model

    load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=tmp_path / "data")  # train once
    env = {**os.environ, "PQ_HARNESS_LOCK_DIR": str(tmp_path / "locks")}
    procs = {name: subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config",
                                     str(_run_config(tmp_path, shared_cache, name))], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("a", "b")}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
    db = {name: tmp_path / name / "results.db" for name in procs}
    windows = {name: _windows(db[name]) for name in procs}
    heavy = {name: _heavy(db[name]) for name in procs}
    whats = {w for _, _, w in heavy["a"]}
    assert {"accuracy pass ort-cpu fp32", "per-layer profile b1"} <= whats and any(w.startswith("build") for w in whats)
    assert any(w.startswith("prune") for w in whats)
    # The two runs were alive at the same time, so the property below is not met by running one after the other.
    span = {n: (min(h[0] for h in heavy[n]), max(w[1] for w in windows[n])) for n in procs}
    assert span["a"][0] < span["b"][1] and span["b"][0] < span["a"][1], span
    for mine, other in (("a", "b"), ("b", "a")):
        for w_start, w_end, _ in windows[mine]:
            for h_start, h_end, what in heavy[other]:
                assert w_end <= h_start or h_end <= w_start, (
                    f"{mine}'s window {w_start:.3f}-{w_end:.3f} overlaps {other}'s {what} {h_start:.3f}-{h_end:.3f}")
            for o_start, o_end, _ in windows[other]:
                assert w_end <= o_start or o_end <= w_start, "two windows overlap"
