"""harness/measure/hostload.py against the real /proc of this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.measure.hostload import HostLoadSampler, read_process_times
from harness.measure.stats import assess_stability

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_sane_values_and_our_own_process_is_not_counted():
    with HostLoadSampler(period_s=0.1, busy_cpu_pct=5.0, top=1000) as sampler:
        end = time.monotonic() + 0.4
        while time.monotonic() < end:  # we are busy ourselves; that is the timed work, not load
            pass
    load = sampler.result
    assert load is not None and load.source == "proc"
    assert load.loadavg_before is not None and len(load.loadavg_before) == 3
    assert all(v >= 0 for v in load.loadavg_before + load.loadavg_after)
    assert load.usable_cpus is not None and 1 <= load.usable_cpus <= (os.cpu_count() or 1)
    assert load.window_s >= 0.4 and load.snapshots >= 3
    assert load.max_other_cpu_pct is not None and load.max_other_cpu_pct >= 0
    assert os.getpid() not in {p.pid for p in load.busy_processes}
    assert load.to_dict()["usable_cpus"] == load.usable_cpus


def test_a_spinning_child_process_is_flagged():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        with HostLoadSampler(period_s=0.1, busy_cpu_pct=5.0, top=1000) as sampler:
            time.sleep(0.7)
    finally:
        child.kill()
        child.wait()
    load = sampler.result
    busy = {p.pid: p for p in load.busy_processes}
    assert child.pid in busy, load
    assert busy[child.pid].cpu_pct > 5.0 and busy[child.pid].name.startswith("python")
    assert load.busy and f"pid {child.pid}" in load.reason
    # and assess_stability turns it into a reason
    tight = [[1_000_000 + i for i in range(50)] for _ in range(3)]
    verdict = assess_stability(tight, "cpu", host_load=load)
    assert not verdict.stable and any(r.startswith("host busy:") for r in verdict.reasons)


def test_missing_proc_degrades_to_none(tmp_path: Path):
    with HostLoadSampler(period_s=0.05, proc=tmp_path / "no-proc") as sampler:
        time.sleep(0.1)
    load = sampler.result
    assert load.max_other_cpu_pct is None and load.busy_processes == []
    assert load.source in ("loadavg", "none")


def test_stat_parsing_handles_odd_process_names(tmp_path: Path):
    (tmp_path / "4242").mkdir()
    # comm may contain spaces and parentheses; utime=7, stime=5 are fields 14 and 15
    rest = "S 1 1 1 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 1000 10"
    (tmp_path / "4242" / "stat").write_text(f"4242 (my (odd) name) {rest}\n")
    (tmp_path / "self").mkdir()  # non-numeric entries are skipped
    (tmp_path / "99").mkdir()  # a process that vanished: no stat file
    assert read_process_times(tmp_path) == {4242: ("my (odd) name", 12)}
    assert read_process_times(tmp_path / "missing") is None


def test_real_proc_snapshot_contains_ourselves():
    times = read_process_times()
    assert times is not None and os.getpid() in times
    name, ticks = times[os.getpid()]
    assert ticks >= 0 and isinstance(name, str)
    assert np.all(np.array([t for _, t in times.values()]) >= 0)


def test_another_harness_process_is_named_as_such(tmp_path: Path):
    from harness.measure.hostload import is_harness_process

    fake = tmp_path / "proc"
    for pid, argv in {1: ["python3", "-m", "harness.cli", "run"], 2: ["/usr/local/bin/harness", "run"],
                      3: ["python3", "-c", "while True: pass"], 4: ["python3", "bench/statistics.py"]}.items():
        (fake / str(pid)).mkdir(parents=True)
        (fake / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert [is_harness_process(pid, fake) for pid in (1, 2, 3, 4, 5)] == [True, True, False, False, False]

    script = tmp_path / "harness"  # a real process whose command line runs "harness"
    script.write_text("import time\nend = time.time() + 20\nwhile time.time() < end: pass\n")
    child = subprocess.Popen([sys.executable, str(script)])
    try:
        time.sleep(0.2)
        with HostLoadSampler(period_s=0.1, busy_cpu_pct=5.0, top=1000) as sampler:
            time.sleep(0.5)
    finally:
        child.kill()
        child.wait()
    mine = [p for p in sampler.result.busy_processes if p.pid == child.pid]
    assert mine and mine[0].harness and mine[0].label == f"another harness process, pid {child.pid}"
    assert f"harness (pid {child.pid})" in (sampler.result.reason or "")
