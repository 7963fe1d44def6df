"""Interleaved timing windows: the repeats of comparable cells measured round-robin.

A sweep used to time each cell's repeats back to back, cell after cell. Anything that changed the
machine's speed between two cells (another job starting, clocks, heat) then looked like a
difference between the cells, and no resampling of one cell's repeats can see it. Here the windows
of a group of comparable cells (the cells of one unit: same model variant and data, other backend,
precision, batch size; each timing definition is one window) are measured in *rounds*: round r
runs one repeat of every window, in an order shuffled per round with a seeded generator (so no
window always runs first, after the same neighbour, or at the same phase of a slow drift; as
Google Benchmark's random interleaving). A slowdown then hits every window of the round, and
``harness.measure.stats.compare_paired_rounds`` cancels it by comparing the two cells round by round.

Each repeat records its round, its position in the round and its start and end time. The whole
block of rounds is one exclusive window on the device (:class:`harness.measure.locks.DeviceLock`), with the
host load sampled across it; sessions stay alive between rounds (the caller decides how many are
kept, see :data:`MAX_SESSIONS`). Before a window of another session than the one just timed, the
block waits until the process's thread pools stop spinning
(:func:`harness.measure.timing.wait_for_idle_threads`), so one session's idle spin never slows the next
session's window; the wait is stored per repeat. Inputs are staged before the block; nothing but
timed calls and their warm-up runs inside it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.measure import stats
from harness.measure.energy import EnergyMeter
from harness.measure.hostload import HostLoad, HostLoadSampler
from harness.measure.locks import DeviceLock
from harness.measure.timing import (
    CudaEventTimer,
    PerfCounterTimer,
    TimingResult,
    TimingSettings,
    measure_repeat,
    wait_for_idle_threads,
)

#: Sessions a unit keeps alive at once for interleaving, by device class: on CPU a session is a
#: model's weights and an ONNX Runtime / torch runtime (megabytes to a few hundred MB); on a GPU
#: each TensorRT engine holds its weights, activations and workspace in device memory, so at most
#: four are kept and larger units are interleaved in groups of four sessions.
MAX_SESSIONS: dict[str, int] = {"cpu": 32, "cuda": 4}

#: How the windows of a group were measured, stored with each timing entry as ``design``.
DESIGN_INTERLEAVED = "interleaved"


@dataclass
class WindowSpec:
    """One window to measure: a cell's timing definition, ready to call (inputs already staged)."""

    key: Hashable  # e.g. (cell key, definition)
    fn: Callable[[Any], Any]
    inputs: Sequence[Any]
    batch_size: int
    definition: str
    timer: PerfCounterTimer | CudaEventTimer
    device: str = "cpu"
    #: The runtime the window calls into (its session): before a window of another session than the
    #: one timed just before, the block waits for the process's thread pools to go idle.
    session: Hashable | None = None


@dataclass
class WindowRecord:
    """What one window of an interleaved block measured."""

    result: TimingResult
    rounds: list[int] = field(default_factory=list)  # round index of each repeat
    positions: list[int] = field(default_factory=list)  # position in its round of each repeat
    settle_s: list[float] = field(default_factory=list)  # wait for idle threads before each repeat
    until_stable: dict[str, Any] | None = None

    def interleave_dict(self, block: BlockInfo) -> dict[str, Any]:
        """The ``interleave`` entry stored with the window's timing."""
        return {"design": DESIGN_INTERLEAVED, "block_id": block.block_id, "windows": block.windows,
                "seed": block.seed, "rounds": list(self.rounds), "positions": list(self.positions),
                "settle_s": [round(v, 4) for v in self.settle_s]}


@dataclass(frozen=True)
class BlockInfo:
    """The block of rounds: its id (pairs are compared by round only within one block), when it ran,
    the lock and the host load across it."""

    block_id: str
    seed: int
    windows: int
    rounds: int
    start: float
    end: float
    lock_device: str
    lock_waited_s: float
    host_load: HostLoad | None

    def window_dict(self) -> dict[str, Any]:
        """The ``window`` entry of each timing (start/end of the whole block, as one locked window)."""
        return {"start": self.start, "end": self.end, "lock_device": self.lock_device,
                "lock_waited_s": self.lock_waited_s, "block_id": self.block_id}


def round_orders(count: int, rounds: int, seed: int) -> list[list[int]]:
    """The order of ``count`` windows in each of ``rounds`` rounds: a seeded shuffle per round."""
    rng = random.Random(seed)
    orders = []
    for _ in range(rounds):
        order = list(range(count))
        rng.shuffle(order)
        orders.append(order)
    return orders


def _converged(records: Sequence[WindowRecord], target_pct: float) -> bool:
    return all(stats.median_ci(r.result.repeats_ns, resamples=500).half_width_pct <= target_pct for r in records)


def measure_interleaved(
    windows: Sequence[WindowSpec],
    settings: TimingSettings,
    *,
    lock_device: str,
    seed: int = 0,
    lock_dir: Path | None = None,
    notice: Callable[[str], None] | None = None,
    monitor: Any = None,
    meter: EnergyMeter | None = None,
) -> tuple[list[WindowRecord], BlockInfo]:
    """Measure ``windows`` in rounds (``settings.repeats`` of them, or until every window's median CI
    is within ``settings.until_stable.target_ci_pct`` and at most ``max_seconds`` per window), one
    repeat of each window per round in a seeded shuffled order, all under one exclusive device lock
    and one host-load sampler (and ``monitor``, a context manager such as the NVML device monitor,
    when given). ``meter`` (the entered monitor, on a GPU) is read around every repeat's timed calls,
    so each window's energy is its own. Returns one record per window (in the order given) and the
    block's info."""
    if not windows:
        raise ValueError("measure_interleaved needs at least one window")
    records = [WindowRecord(TimingResult(definition=w.definition, timer=w.timer.name, batch_size=w.batch_size,
                                         config=settings, device=w.device)) for w in windows]
    target = settings.until_stable
    max_rounds = settings.repeats if target is None else 1000
    budget = None if target is None else target.max_seconds * len(windows)
    rng = random.Random(seed)  # the same orders as round_orders(len(windows), rounds, seed)
    block_id = uuid.uuid4().hex
    with DeviceLock(lock_device, lock_dir=lock_dir, on_wait=notice) as lock:
        with HostLoadSampler() as sampler, (monitor if monitor is not None else NoMonitor()):
            start = time.time()
            t0 = time.monotonic()
            r = 0
            previous: Any = _NO_SESSION
            while r < max_rounds:
                order = list(range(len(windows)))
                rng.shuffle(order)
                for pos, i in enumerate(order):
                    w = windows[i]
                    settled = 0.0
                    if w.session is None or w.session != previous:
                        settled = wait_for_idle_threads()
                    previous = w.session
                    one = measure_repeat(w.fn, w.inputs, config=settings, timer=w.timer, device=w.device,
                                         meter=meter)
                    rec = records[i]
                    rec.result.add(one)
                    rec.rounds.append(r)
                    rec.positions.append(pos)
                    rec.settle_s.append(settled)
                r += 1
                if target is not None and r >= settings.repeats:
                    if _converged(records, target.target_ci_pct) or time.monotonic() - t0 >= (budget or 0):
                        break
            end = time.time()
        waited = lock.waited_s
    if target is not None:
        converged = _converged(records, target.target_ci_pct)
        for rec in records:
            rec.result.config = settings.model_copy(update={"repeats": r})
            rec.until_stable = {"converged": converged, "repeats": r, "seconds": end - start,
                                "target_ci_pct": target.target_ci_pct, "max_seconds": target.max_seconds,
                                "stop_reason": (f"every window's CI half-width <= target {target.target_ci_pct} %"
                                                if converged
                                                else f"time budget {budget:g} s for {len(windows)} windows spent")}
    info = BlockInfo(block_id=block_id, seed=seed, windows=len(windows), rounds=r, start=start, end=end,
                     lock_device=lock_device, lock_waited_s=waited, host_load=sampler.result)
    return records, info


_NO_SESSION = object()


class NoMonitor:
    """Stands in for a device monitor where there is none (a CPU window, or no NVML): nothing measured."""

    result = None

    def __enter__(self) -> NoMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def paired_rounds(baseline: dict[str, Any] | None, candidate: dict[str, Any] | None,
                  baseline_ns: Sequence[Sequence[int]], candidate_ns: Sequence[Sequence[int]]
                  ) -> tuple[list[list[int]], list[list[int]]] | None:
    """The two cells' repeats paired by round, when both timings were measured in the same
    interleaved block (their ``interleave`` entries name the same ``block_id``); None otherwise
    (then the pair was measured in separate windows)."""
    if not baseline or not candidate:
        return None
    if baseline.get("design") != DESIGN_INTERLEAVED or candidate.get("design") != DESIGN_INTERLEAVED:
        return None
    if not baseline.get("block_id") or baseline.get("block_id") != candidate.get("block_id"):
        return None
    b_rounds, c_rounds = baseline.get("rounds") or [], candidate.get("rounds") or []
    if len(b_rounds) != len(baseline_ns) or len(c_rounds) != len(candidate_ns):
        return None
    b_by, c_by = dict(zip(b_rounds, baseline_ns)), dict(zip(c_rounds, candidate_ns))
    common = sorted(set(b_by) & set(c_by))
    if len(common) < stats.MIN_ROUNDS_PAIRED:
        return None
    return [list(b_by[r]) for r in common], [list(c_by[r]) for r in common]
