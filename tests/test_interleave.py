"""harness/interleave.py: round-robin repeats of several windows with real timed calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.interleave import WindowSpec, measure_interleaved, paired_rounds, round_orders
from harness.timing import PerfCounterTimer, TimingSettings


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
