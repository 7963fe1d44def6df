"""Load on the host before and during a timing window.

:class:`HostLoadSampler` is a context manager around a timing window: it reads
the load average and a snapshot of every process's CPU time (``/proc/<pid>/stat``
utime + stime) at the start, every ``period_s`` in a background thread (so a
process that starts during the window is seen too), and at the end. A process
other than our own that used more than ``busy_cpu_pct`` % of one CPU between its
first and last snapshot is "busy". The result is a :class:`HostLoad`, which
:func:`harness.measure.stats.assess_stability` turns into an instability reason.

Where ``/proc`` or ``os.getloadavg`` is missing (macOS, some containers) the
fields are None and ``busy`` is decided from what is known; nothing raises.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True)
class BusyProcess:
    pid: int
    name: str
    cpu_pct: float  # % of one CPU over the part of the window the process was seen in
    harness: bool = False  # another harness process (its command line runs the harness)

    @property
    def label(self) -> str:
        """"another harness process, pid N" or "name (pid N)"."""
        return f"another harness process, pid {self.pid}" if self.harness else f"{self.name} (pid {self.pid})"


def is_harness_process(pid: int, proc: Path = PROC) -> bool:
    """Whether ``pid``'s command line runs the harness (``harness ...``, ``python -m harness.cli ...``,
    a Ray worker running harness units is not counted: its command line names Ray)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    for arg in args[:4]:
        base = arg.rsplit("/", 1)[-1]
        if base == "harness" or arg.startswith("harness.") or arg == "harness":
            return True
    return False


@dataclass(frozen=True)
class HostLoad:
    loadavg_before: tuple[float, float, float] | None
    loadavg_after: tuple[float, float, float] | None
    loadavg_max_1min: float | None  # highest 1-minute load average seen during the window
    usable_cpus: int | None  # CPUs this process may run on (affinity), else os.cpu_count()
    window_s: float
    max_other_cpu_pct: float | None  # busiest other process, % of one CPU; None without /proc
    busy_processes: list[BusyProcess] = field(default_factory=list)  # top few, busiest first
    busy: bool = False
    reason: str | None = None
    snapshots: int = 0
    source: str = "proc"  # "proc" | "loadavg" | "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def loadavg() -> tuple[float, float, float] | None:
    try:
        a, b, c = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (a, b, c)


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def read_process_times(proc: Path = PROC) -> dict[int, tuple[str, int]] | None:
    """pid -> (name, utime + stime in clock ticks) for every readable process; None without /proc."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    out: dict[int, tuple[str, int]] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(proc / entry / "stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited, or not ours to read
        text = raw.decode("utf-8", "replace")
        lpar, rpar = text.find("("), text.rfind(")")
        if lpar < 0 or rpar < 0:
            continue
        fields = text[rpar + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15
        try:
            ticks = int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
        out[int(entry)] = (text[lpar + 1 : rpar], ticks)
    return out


class HostLoadSampler:
    """Sample host load around a window::

        with HostLoadSampler() as sampler:
            result = measure(...)
        load = sampler.result  # HostLoad

    ``period_s`` (default 1 s) sets the background sampling period; each sample
    reads one small file per process (about 100 processes: 1-9 ms on a loaded
    2-core machine), so the sampler costs under 1 % of a CPU. Snapshots are always
    taken at the start and the end, so a window shorter than the period still
    measures every process alive through it. ``busy_cpu_pct``: another process above this share of one CPU
    makes the host busy; so does a 1-minute load average at or above the usable
    CPU count plus one (our own timed work accounts for one).
    """

    def __init__(
        self,
        period_s: float = 1.0,
        busy_cpu_pct: float = 20.0,
        top: int = 5,
        proc: Path | str = PROC,
        exclude_pids: tuple[int, ...] = (),
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.period_s = period_s
        self.busy_cpu_pct = busy_cpu_pct
        self.top = top
        self.proc = Path(proc)
        self.exclude = {os.getpid(), *exclude_pids}
        self.result: HostLoad | None = None
        self._first: dict[int, tuple[float, str, int]] = {}
        self._last: dict[int, tuple[float, str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._have_proc = True
        self._snapshots = 0
        self._load_max: float | None = None
        self._before: tuple[float, float, float] | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        now = time.monotonic()
        la = loadavg()
        times = read_process_times(self.proc) if self._have_proc else None
        with self._lock:
            if la is not None:
                self._load_max = la[0] if self._load_max is None else max(self._load_max, la[0])
            if times is None:
                self._have_proc = False
                return
            self._snapshots += 1
            for pid, (name, ticks) in times.items():
                if pid in self.exclude:
                    continue
                self._first.setdefault(pid, (now, name, ticks))
                self._last[pid] = (now, name, ticks)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def start(self) -> HostLoadSampler:
        self._before = loadavg()
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="hostload-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> HostLoad:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        window = time.monotonic() - self._t0
        after = loadavg()
        tick = _clock_ticks()
        busy_list: list[BusyProcess] = []
        max_pct: float | None = None
        if self._have_proc:
            max_pct = 0.0
            for pid, (t_first, name, ticks_first) in self._first.items():
                t_last, _, ticks_last = self._last[pid]
                span = t_last - t_first
                if span <= 0:
                    continue  # seen once: no rate
                pct = 100.0 * (ticks_last - ticks_first) / tick / span
                max_pct = max(max_pct, pct)
                if pct > self.busy_cpu_pct:
                    busy_list.append(BusyProcess(pid=pid, name=name, cpu_pct=round(pct, 1),
                                                 harness=is_harness_process(pid, self.proc)))
            busy_list.sort(key=lambda p: p.cpu_pct, reverse=True)
        cpus = usable_cpus()
        reasons = []
        if busy_list:
            names = ", ".join(f"{'harness' if p.harness else p.name} (pid {p.pid}) {p.cpu_pct:.0f} %"
                              for p in busy_list[: self.top])
            reasons.append(f"other processes using CPU: {names}")
        if self._load_max is not None and cpus is not None and self._load_max >= cpus + 1:
            reasons.append(f"load average {self._load_max:.2f} on {cpus} usable CPUs")
        source = "proc" if self._have_proc else ("loadavg" if self._load_max is not None else "none")
        self.result = HostLoad(
            loadavg_before=self._before,
            loadavg_after=after,
            loadavg_max_1min=self._load_max,
            usable_cpus=cpus,
            window_s=window,
            max_other_cpu_pct=None if max_pct is None else round(max_pct, 1),
            busy_processes=busy_list[: self.top],
            busy=bool(reasons),
            reason="; ".join(reasons) or None,
            snapshots=self._snapshots,
            source=source,
        )
        return self.result

    def __enter__(self) -> HostLoadSampler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
