"""harness/measure/interleave.py: round-robin repeats of several windows with real timed calls."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.measure.interleave import WindowSpec, measure_interleaved, paired_rounds, round_orders
from harness.measure.timing import PerfCounterTimer, TimingSettings


def _spec(key: str, log: list[str], sleep_s: float) -> WindowSpec:
    def fn(_: object) -> None:
        log.append(key)
        time.sleep(sleep_s)

    return WindowSpec(key=key, fn=fn, inputs=[None], batch_size=1, definition="compute", timer=PerfCounterTimer())


def test_rounds_run_one_repeat_of_every_window_in_a_seeded_shuffled_order(tmp_path: Path):
    log: list[str] = []
    specs = [_spec(k, log, 0.001) for k in "abcd"]
    settings = TimingSettings(warmup=1, iterations=2, repeats=4, min_seconds=0, warmup_seconds=0)
    records, block = measure_interleaved(specs, settings, lock_device="cpu", seed=7, lock_dir=tmp_path)
    orders = round_orders(4, 4, 7)
    # each round: every window once (warm-up + 2 timed calls), in that round's shuffled order
    expected = [k for order in orders for i in order for k in ["abcd"[i]] * 3]
    assert log == expected
    assert len({tuple(o) for o in orders}) > 1  # the order changes between rounds
    assert block.rounds == 4 and block.windows == 4 and block.end >= block.start
    for i, rec in enumerate(records):
        assert rec.rounds == [0, 1, 2, 3]
        assert rec.positions == [orders[r].index(i) for r in range(4)]
        assert len(rec.result.repeats_ns) == 4 and all(len(rep) == 2 for rep in rec.result.repeats_ns)
        times = rec.result.repeat_times
        assert all(a <= b for a, b in times) and all(times[j][1] <= times[j + 1][0] for j in range(3))
    # repeats of round r of all windows happen before any repeat of round r + 1
    last_of_round0 = max(rec.result.repeat_times[0][1] for rec in records)
    first_of_round1 = min(rec.result.repeat_times[1][0] for rec in records)
    assert last_of_round0 <= first_of_round1
    entry = records[0].interleave_dict(block)
    assert entry["design"] == "interleaved" and entry["block_id"] == block.block_id and entry["seed"] == 7


def test_pairing_by_round_needs_the_same_block():
    a = {"design": "interleaved", "block_id": "x", "rounds": [0, 1, 2]}
    b = {"design": "interleaved", "block_id": "x", "rounds": [0, 1, 2]}
    other = {"design": "interleaved", "block_id": "y", "rounds": [0, 1, 2]}
    ns = [[1, 2], [3, 4], [5, 6]]
    assert paired_rounds(a, b, ns, ns) == (ns, ns)
    assert paired_rounds(a, other, ns, ns) is None
    assert paired_rounds(a, None, ns, ns) is None
    assert paired_rounds({"design": "separate"}, b, ns, ns) is None


def test_until_stable_adds_rounds_until_every_window_is_tight(tmp_path: Path):
    log: list[str] = []
    specs = [_spec(k, log, 0.002) for k in "ab"]
    settings = TimingSettings(warmup=0, iterations=5, repeats=3, min_seconds=0, warmup_seconds=0,
                              until_stable={"target_ci_pct": 50.0, "max_seconds": 5})
    records, block = measure_interleaved(specs, settings, lock_device="cpu", lock_dir=tmp_path)
    assert block.rounds == 3  # a loose target is met after the minimum rounds
    assert records[0].until_stable["converged"] and records[0].result.config.repeats == 3
    with pytest.raises(ValueError):
        measure_interleaved([], settings, lock_device="cpu", lock_dir=tmp_path)


def _spinning_spec(key: str, session: str, spin_s: float, spins: list[tuple[str, float, float]]) -> WindowSpec:
    """A window whose every call leaves a thread burning CPU for ``spin_s`` afterwards, as a runtime's
    thread pool spins after its last call; ``spins`` gets (session, start, end) of each spin."""
    def fn(_: object) -> None:
        end = time.perf_counter() + spin_s

        def spin() -> None:
            while time.perf_counter() < end:
                pass
        now = time.time()
        spins.append((session, now, now + (end - time.perf_counter())))
        threading.Thread(target=spin, daemon=True).start()

    return WindowSpec(key=key, fn=fn, inputs=[None], batch_size=1, definition="compute",
                      timer=PerfCounterTimer(), session=session)


def test_a_window_of_another_session_starts_after_the_previous_session_stopped_spinning(tmp_path: Path):
    spins: list[tuple[str, float, float]] = []
    specs = [_spinning_spec("a", "A", 0.08, spins), _spinning_spec("b", "B", 0.08, spins)]
    settings = TimingSettings(warmup=0, iterations=1, repeats=3, min_seconds=0, warmup_seconds=0)
    records, _ = measure_interleaved(specs, settings, lock_device="cpu", seed=1, lock_dir=tmp_path)
    starts = sorted((start, rec_i, rep) for rec_i, rec in enumerate(records)
                    for rep, (start, _) in enumerate(rec.result.repeat_times))
    for (start, i, rep), (prev_start, j, _) in zip(starts[1:], starts[:-1]):
        if i != j:  # the session changed: the other one's spin ended before this window began
            other = "AB"[j]
            last_spin_end = max(end for s, began, end in spins if s == other and began < start)
            assert start >= last_spin_end - 0.002, (start, last_spin_end)
            assert records[i].settle_s[rep] >= 0.05
    assert all(len(rec.settle_s) == 3 for rec in records)


def test_windows_of_one_session_follow_each_other_without_a_wait(tmp_path: Path):
    spins: list[tuple[str, float, float]] = []
    specs = [_spinning_spec(k, "A", 0.05, spins) for k in ("compute", "e2e")]
    settings = TimingSettings(warmup=0, iterations=1, repeats=3, min_seconds=0, warmup_seconds=0)
    records, _ = measure_interleaved(specs, settings, lock_device="cpu", seed=3, lock_dir=tmp_path)
    waits = sorted((start, rec.settle_s[rep]) for rec in records
                   for rep, (start, _) in enumerate(rec.result.repeat_times))
    assert waits[0][1] > 0  # before the block's first window: whatever ran before is waited out
    assert all(w == 0.0 for _, w in waits[1:])  # the same session's own spin is part of its speed
