"""Stability rules against timing windows recorded on this project's machine (tinycnn on ONNX Runtime,
CPU, the harness's own engine with the default duration-based repeats; recorded with
bench/record_timing_samples.py) and against noisy windows made from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.measure.hostload import BusyProcess, HostLoad
from harness.measure.stats import assess_stability, median_ci, not_comparable_reason

SAMPLES = Path(__file__).resolve().parent / "data" / "timing_samples"


def _load(name: str) -> tuple[list[list[int]], HostLoad | None, dict]:
    rec = json.loads((SAMPLES / f"{name}.json").read_text())
    load = rec["host_load"]
    host = None
    if load is not None:
        fields = dict(load)
        fields["busy_processes"] = [BusyProcess(**p) for p in fields.get("busy_processes", [])]
        for key in ("loadavg_before", "loadavg_after"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        host = HostLoad(**fields)
    return rec["repeats_ns"], host, rec


def _verdict(name: str):
    reps, host, rec = _load(name)
    return assess_stability(reps, rec["device"], median_ci(reps, batch_size=rec["batch_size"]), host_load=host)


@pytest.mark.parametrize("name", ["quiet-b1-compute", "quiet-b32-e2e"])
def test_recorded_quiet_windows_are_stable(name: str):
    _, host, rec = _load(name)
    assert rec["settings"]["min_seconds"] == 0.5 and not host.busy  # default durations, host not busy
    v = _verdict(name)
    assert v.stable, v.reasons


def test_recorded_load_step_is_unstable_because_the_host_was_busy_and_repeats_disagree():
    v = _verdict("load-step-b32-compute")
    assert not v.stable
    assert "host" in v.causes and "repeats" in v.causes
    assert any(r.startswith("host busy: other processes using CPU: python3") for r in v.reasons)
    assert not_comparable_reason(v, None) is not None


def test_a_load_step_the_median_hides_is_still_caught_by_the_host_sampler():
    """At batch 1 a call is shorter than a scheduler slice: the repeat medians barely move under the
    load step, so only the host-load sample tells that the window was disturbed."""
    v = _verdict("load-step-b1-compute")
    assert "repeats" not in v.causes and "cv" not in v.causes
    assert v.causes == ["host"]


def test_recorded_window_beside_other_processes_is_unstable_with_the_other_process_named():
    v = _verdict("busy-b1-compute")
    assert not v.stable and "host" in v.causes and "repeats" in v.causes
    assert any("pid" in r for r in v.reasons if r.startswith("host busy"))


def test_a_bimodal_window_made_from_quiet_samples_is_unstable_for_scatter():
    """Calls alternating between two machine states 40 % apart (an SMT sibling busy or idle) in blocks."""
    reps, _, _ = _load("quiet-b1-compute")
    bimodal = []
    for rep in reps:
        arr = np.array(rep, dtype=np.float64)
        blocks = (np.arange(len(arr)) // 50) % 2 == 1
        arr[blocks] *= 1.4
        bimodal.append(arr.astype(np.int64).tolist())
    v = assess_stability(bimodal, "cpu")
    assert not v.stable and "cv" in v.causes and "host" not in v.causes
    assert any(r.startswith("samples scatter: robust CV") for r in v.reasons)


def test_one_slow_repeat_made_from_quiet_samples_is_unstable_because_repeats_disagree():
    reps, _, _ = _load("quiet-b1-compute")
    slow_last = [*reps[:-1], (np.array(reps[-1]) * 1.25).astype(np.int64).tolist()]
    v = assess_stability(slow_last, "cpu")
    assert not v.stable and "repeats" in v.causes and "host" not in v.causes


def test_a_repeat_within_the_limit_shows_as_a_wide_interval_instead():
    """15 % slower in one of three repeats: a stdev of the repeat medians under pyperf's 10 % of the
    mean, so no "!"; the interval printed beside the median reaches the slow repeat instead."""
    reps, _, _ = _load("quiet-b1-compute")
    slow_last = [*reps[:-1], (np.array(reps[-1]) * 1.15).astype(np.int64).tolist()]
    ci = median_ci(slow_last)
    v = assess_stability(slow_last, "cpu", ci)
    assert v.stable and v.repeat_cv < 0.10
    assert ci.high_ms >= float(np.median(slow_last[-1])) / 1e6
    assert ci.half_width_pct > 3 * median_ci(reps).half_width_pct
