"""harness/measure/locks.py with real processes and threads (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.measure.locks import DeviceLock, OutDirLock, lock_name
from tests.helpers import repo_env

REPO = Path(__file__).resolve().parent.parent

HOLDER = r"""
import json, sys, time
from pathlib import Path
from harness.measure.locks import DeviceLock
lock_dir, out, windows, hold, marker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
events = {"waits": [], "windows": [], "waited_s": []}
for _ in range(windows):
    lock = DeviceLock("cpu", lock_dir=lock_dir, on_wait=events["waits"].append, poll_s=0.01)
    with lock:
        t0 = time.time()
        if marker != "-":
            Path(marker).write_text("held")
        time.sleep(hold)
        t1 = time.time()
    events["windows"].append([t0, t1])
    events["waited_s"].append(lock.waited_s)
out.write_text(json.dumps(events))
"""


def _spawn(tmp_path: Path, name: str, windows: int, hold: float, marker: str = "-") -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.json"
    env = repo_env()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "locks"), str(out), str(windows), str(hold), marker],
        cwd=REPO, env=env,
    )
    return proc, out


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


def test_two_processes_never_hold_the_device_at_once(tmp_path: Path):
    a, out_a = _spawn(tmp_path, "a", windows=4, hold=0.1)
    b, out_b = _spawn(tmp_path, "b", windows=4, hold=0.1)
    assert a.wait(60) == 0 and b.wait(60) == 0
    ev_a, ev_b = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    windows = sorted([tuple(w) for w in ev_a["windows"]] + [tuple(w) for w in ev_b["windows"]])
    assert len(windows) == 8
    for (s0, e0), (s1, e1) in zip(windows, windows[1:]):
        assert e0 <= s1, f"timing windows overlap: {(s0, e0)} and {(s1, e1)}"


def test_waiter_is_told_once_who_holds_the_lock(tmp_path: Path):
    marker = tmp_path / "held"
    holder, out_h = _spawn(tmp_path, "holder", windows=1, hold=1.0, marker=str(marker))
    _wait_for(marker)
    messages: list[str] = []
    lock = DeviceLock("cpu", lock_dir=tmp_path / "locks", on_wait=messages.append, poll_s=0.01)
    with lock:
        got_it = time.time()
    assert holder.wait(60) == 0
    held_until = json.loads(out_h.read_text())["windows"][0][1]
    assert got_it >= held_until
    assert messages == [f"waiting for another harness process (pid {holder.pid}) timing on cpu..."]
    assert lock.waited_s > 0.05 and lock.waited_for_pid == str(holder.pid)
    # the lock file names no holder once released
    assert (tmp_path / "locks" / "cpu.lock").read_text() == ""


def test_uncontended_lock_does_not_call_on_wait_and_records_the_holder(tmp_path: Path):
    messages: list[str] = []
    with DeviceLock("GPU-1234:abc", lock_dir=tmp_path, on_wait=messages.append) as lock:
        text = (tmp_path / "GPU-1234_abc.lock").read_text()
        assert text.split()[0] == str(os.getpid())
    assert messages == [] and lock.waited_s < 1.0 and not lock.held


def test_threads_exclude_each_other(tmp_path: Path):
    inside = 0
    overlaps = []
    guard = threading.Lock()

    def worker():
        nonlocal inside
        for _ in range(5):
            with DeviceLock("cpu", lock_dir=tmp_path, poll_s=0.001):
                with guard:
                    inside += 1
                    overlaps.append(inside)
                time.sleep(0.01)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 15 and max(overlaps) == 1


def test_lock_of_a_killed_holder_is_released(tmp_path: Path):
    marker = tmp_path / "held"
    holder, _ = _spawn(tmp_path, "holder", windows=1, hold=60.0, marker=str(marker))
    _wait_for(marker)
    with pytest.raises(HarnessError, match="gave up after 0.2 s"):
        DeviceLock("cpu", lock_dir=tmp_path / "locks", timeout_s=0.2).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    with DeviceLock("cpu", lock_dir=tmp_path / "locks", timeout_s=10) as lock:
        assert lock.held


def test_out_dir_lock_refuses_a_second_writer(tmp_path: Path):
    out = tmp_path / "results"
    with OutDirLock(out):
        with pytest.raises(HarnessError) as err:
            OutDirLock(out).acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and str(out) in msg and "--out" in msg
        messages: list[str] = []
        with pytest.raises(HarnessError, match="gave up"):
            OutDirLock(out, wait=True, on_wait=messages.append, timeout_s=0.1).acquire()
        assert len(messages) == 1 and "writing to" in messages[0]
    with OutDirLock(out) as again:  # free once released
        assert again.held


def test_lock_names_are_file_safe():
    assert lock_name("cpu") == "cpu"
    assert lock_name("cuda:0") == "cuda_0"
    assert lock_name("MIG-GPU-1/2/3") == "MIG-GPU-1_2_3"
    with pytest.raises(HarnessError):
        lock_name("..")


# --------------------------------------------------------------------------- shared (heavy work) vs exclusive

WORKER = r"""
import json, sys, time
from pathlib import Path
from harness.measure.locks import DeviceLock, heavy_work
lock_dir, out, kind, hold, marker, start_after = sys.argv[1:7]
if start_after != "-":
    while not Path(start_after).exists():
        time.sleep(0.005)
t_asked = time.time()
if kind == "window":
    with DeviceLock("cpu", lock_dir=lock_dir, poll_s=0.005):
        t0 = time.time()
        if marker != "-":
            Path(marker).write_text("held")
        time.sleep(float(hold))
        t1 = time.time()
else:
    with heavy_work("cpu", kind, lock_dir=lock_dir, poll_s=0.005) as work:
        t0 = time.time()
        if marker != "-":
            Path(marker).write_text("held")
        time.sleep(float(hold))
        t1 = time.time()
Path(out).write_text(json.dumps({"asked": t_asked, "start": t0, "end": t1}))
"""


def _worker(tmp_path: Path, name: str, kind: str, hold: float, marker: str = "-",
            start_after: str = "-") -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.json"
    env = repo_env()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "locks"), str(out), kind, str(hold),
                             marker, start_after], cwd=REPO, env=env)
    return proc, out


def _span(out: Path) -> dict:
    return json.loads(out.read_text())


def test_heavy_work_waits_for_another_process_window_and_a_window_waits_for_heavy_work(tmp_path: Path):
    from harness.measure.locks import heavy_work

    held = tmp_path / "window-held"
    window, out_w = _worker(tmp_path, "window", "window", 0.5, marker=str(held))
    _wait_for(held)
    messages: list[str] = []
    with heavy_work("cpu", "accuracy pass", lock_dir=tmp_path / "locks", on_wait=messages.append,
                    poll_s=0.005) as work:
        started = time.time()
        heavy_held = tmp_path / "heavy-held"
        heavy_held.write_text("held")
        # now a second window must wait for this heavy work to end
        window2, out_w2 = _worker(tmp_path, "window2", "window", 0.01)
        time.sleep(0.4)
        ended = time.time()
    assert window.wait(60) == 0 and window2.wait(60) == 0
    first, second = _span(out_w), _span(out_w2)
    assert started >= first["end"], "heavy work ran inside another process's timing window"
    assert second["start"] >= ended, "a timing window opened during another process's heavy work"
    assert work.waited_s > 0.05 and work.what == "accuracy pass" and work.end is not None
    assert messages == [f"waiting for another harness process (pid {window.pid}) timing on cpu..."]


def test_heavy_work_of_two_processes_runs_together(tmp_path: Path):
    a_held = tmp_path / "a-held"
    a, out_a = _worker(tmp_path, "a", "export", 1.0, marker=str(a_held))
    _wait_for(a_held)
    b, out_b = _worker(tmp_path, "b", "calibration", 0.01)
    assert b.wait(60) == 0 and a.wait(60) == 0
    assert _span(out_b)["start"] < _span(out_a)["end"], "shared holders excluded each other"


def test_a_waiting_window_is_not_starved_by_new_heavy_work(tmp_path: Path):
    """Heavy work that asks after a window started waiting runs after that window (the intent file)."""
    first_held = tmp_path / "first-held"
    first, out_1 = _worker(tmp_path, "first", "build", 1.0, marker=str(first_held))
    _wait_for(first_held)
    window, out_w = _worker(tmp_path, "window", "window", 0.3)
    time.sleep(0.3)  # the window is now queued behind the first heavy work
    late, out_l = _worker(tmp_path, "late", "profiling", 0.05)
    for proc in (first, window, late):
        assert proc.wait(60) == 0
    w, lt, f = _span(out_w), _span(out_l), _span(out_1)
    assert w["start"] >= f["end"]
    assert lt["asked"] < w["start"], "the late heavy work asked only after the window opened (test timing)"
    assert lt["start"] >= w["end"], "heavy work that arrived later overtook a waiting window"


def test_own_heavy_work_does_not_block_own_window_and_is_held_again_after_it(tmp_path: Path):
    from harness.measure.locks import heavy_work

    locks = tmp_path / "locks"
    with heavy_work("cpu", "session preparation", lock_dir=locks):
        with DeviceLock("cpu", lock_dir=locks, timeout_s=5) as window:
            assert window.held and window.waited_s < 1.0
        with heavy_work("cpu", "nested accuracy pass", lock_dir=locks, timeout_s=5):
            pass
        # the shared hold is back: another process's window cannot open now
        probe = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom harness.measure.locks import DeviceLock\n"
             "DeviceLock('cpu', lock_dir=sys.argv[1], timeout_s=0.3).acquire()", str(locks)],
            cwd=REPO, env=repo_env(), capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "gave up after 0.3 s" in probe.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom harness.measure.locks import DeviceLock\n"
         "DeviceLock('cpu', lock_dir=sys.argv[1], timeout_s=5).acquire()", str(locks)],
        cwd=REPO, env=repo_env(), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
