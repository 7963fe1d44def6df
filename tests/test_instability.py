"""harness/measure/instability.py: the one summary line of unstable windows by cause."""

from __future__ import annotations

from harness.measure.instability import summarize


def test_summary_counts_windows_by_cause_and_names_the_busy_harness_process():
    busy = {"stable": False, "reasons": ["host busy: other processes using CPU: harness (pid 4242) 71 %"],
            "causes": ["host"]}
    busy_and_wide = {"stable": False, "causes": ["ci", "host"],
                     "reasons": ["median CI half-width 7.0 % > 6.0 %",
                                 "host busy: other processes using CPU: harness (pid 4242) 80 %, cc1 (pid 7) 30 %"]}
    old_style = {"stable": False, "reasons": ["CV 12.0 % > 10.0 %"]}  # stored before cause codes
    stable = {"stable": True, "reasons": []}
    s = summarize([busy] * 117 + [busy_and_wide, old_style, stable, None])
    assert s.windows == 120 and s.unstable == 119
    assert s.by_cause == {"host": 118, "ci": 1, "cv": 1}
    assert s.host_culprits[0] == ("another harness process, pid 4242", 118)
    assert s.line.startswith("119 of 120 windows unstable: host busy (another harness process, pid 4242, cc1, pid 7) 118")
    assert "wide CI 1" in s.line and "samples scatter 1" in s.line
    assert summarize([stable, stable]).line == "all 2 windows stable"
    assert summarize([]).line == "no timing windows"
