"""harness/measure/stats on synthetic samples with known properties (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.measure.hostload import HostLoad
from harness.measure.stats import (
    COMPARISON_TEST,
    StabilityThresholds,
    assess_stability,
    compare_latencies,
    mann_whitney_u,
    measure_until_stable,
    median_ci,
    pick_fastest,
)


def draw(rng, repeats=5, n=40, mu_ns=1e6, drift=0.0, noise=0.03):
    """Repeats of n samples around mu_ns: each repeat shifted by a drift factor, samples jittered."""
    return [
        (mu_ns * (1 + rng.normal(0, drift)) * (1 + rng.normal(0, noise, n))).astype(np.int64).tolist()
        for _ in range(repeats)
    ]


# ---------------------------------------------------------------- median_ci


def test_within_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 150
    for i in range(trials):
        ci = median_ci(draw(rng, repeats=1, n=60), seed=i, resamples=300)
        assert ci.method == "within"
        hits += ci.low_ms <= 1.0 <= ci.high_ms
    assert 0.89 <= hits / trials <= 0.99


def test_hierarchical_ci_covers_true_median_despite_drift():
    rng = np.random.default_rng(2)
    hits = 0
    trials = 120
    for i in range(trials):
        ci = median_ci(draw(rng, repeats=5, n=20, drift=0.03), seed=i, resamples=300)
        assert ci.method == "hierarchical"
        hits += ci.low_ms <= 1.0 <= ci.high_ms
    assert hits / trials >= 0.92


def test_within_only_undercovers_with_drift():
    rng = np.random.default_rng(3)
    trials = 60
    hits = 0
    for i in range(trials):
        ci = median_ci(draw(rng, repeats=5, n=20, drift=0.03), seed=i, resamples=300, method="within")
        hits += ci.low_ms <= 1.0 <= ci.high_ms
    assert hits / trials < 0.7  # why the hierarchical bootstrap is the default


def test_drift_widens_the_ci():
    rng = np.random.default_rng(4)
    data = draw(rng, repeats=6, n=50, drift=0.05)
    hier = median_ci(data)
    within = median_ci(data, method="within")
    assert hier.method == "hierarchical" and within.method == "within"
    assert hier.half_width_pct > 2 * within.half_width_pct
    # without drift the two agree in order of magnitude
    flat = draw(rng, repeats=6, n=50, drift=0.0)
    assert median_ci(flat).half_width_pct < 3 * median_ci(flat, method="within").half_width_pct


def test_method_choice_is_explained():
    rng = np.random.default_rng(5)
    two = draw(rng, repeats=2)
    ci = median_ci(two)
    assert ci.method == "within" and "2 repeat" in ci.method_reason
    three = median_ci(draw(rng, repeats=3))
    assert three.method == "hierarchical" and "drift" in three.method_reason
    with pytest.raises(HarnessError, match="at least 3 repeats"):
        median_ci(two, method="hierarchical")
    with pytest.raises(HarnessError):
        median_ci([[], []])


def test_point_estimate_throughput_and_determinism():
    rng = np.random.default_rng(6)
    data = draw(rng, repeats=3, n=50, mu_ns=8e6)
    ci = median_ci(data, batch_size=32)
    flat = np.concatenate([np.asarray(r) for r in data]) / 1e6
    assert ci.median_ms == pytest.approx(float(np.median(flat)))
    assert ci.low_ms < ci.median_ms < ci.high_ms
    assert ci.throughput_ips == pytest.approx(32 / (ci.median_ms / 1e3))
    assert ci.throughput_low_ips == pytest.approx(32 / (ci.high_ms / 1e3))
    assert ci.throughput_high_ips == pytest.approx(32 / (ci.low_ms / 1e3))
    assert ci.samples == 150 and ci.repeats == 3
    assert median_ci(data, batch_size=32) == ci  # same seed, same answer
    d = ci.to_dict()
    assert d["half_width_pct"] == pytest.approx(ci.half_width_pct) and d["method"] == "hierarchical"


# ---------------------------------------------------------------- comparison


def test_mann_whitney_matches_textbook_values():
    u, p = mann_whitney_u(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))
    assert u == 0.0
    assert p == pytest.approx(0.0809, abs=5e-4)  # normal approx with continuity correction
    # ties: all equal -> no evidence at all
    u, p = mann_whitney_u(np.ones(10), np.ones(10))
    assert u == 50.0 and p == 1.0
    # tie correction: x=[1,2,2], y=[2,3,3]; ranks 1,3,3 | 3,5.5,5.5 -> U1 = 7 - 6 = 1
    u, p = mann_whitney_u(np.array([1.0, 2, 2]), np.array([2.0, 3, 3]))
    assert u == 1.0
    var = 9 / 12 * (7 - (24 + 6) / 30)  # a tie of three 2s (3^3-3) and of two 3s (2^3-2)
    z = (abs(1 - 4.5) - 0.5) / np.sqrt(var)
    from math import erfc, sqrt

    assert p == pytest.approx(erfc(z / sqrt(2)))


def test_identical_configs_are_not_significant_even_with_drift():
    rng = np.random.default_rng(7)
    trials = 60
    sig = 0
    for i in range(trials):
        a = draw(rng, repeats=5, n=20, drift=0.02)
        b = draw(rng, repeats=5, n=20, drift=0.02)
        sig += compare_latencies(a, b, seed=i, resamples=300).significant
    assert sig / trials <= 0.05


def test_ten_percent_slower_is_significant():
    rng = np.random.default_rng(8)
    trials = 60
    hits = 0
    for i in range(trials):
        a = draw(rng, repeats=5, n=20, drift=0.02)
        slow = draw(rng, repeats=5, n=20, drift=0.02, mu_ns=1.1e6)
        c = compare_latencies(a, slow, seed=i, resamples=300)
        hits += c.significant and c.faster == "baseline" and c.speedup < 1
    assert hits / trials >= 0.95


def test_comparison_fields_and_min_effect():
    rng = np.random.default_rng(9)
    a = draw(rng, repeats=5, n=200, noise=0.005)
    b = draw(rng, repeats=5, n=200, noise=0.005, mu_ns=0.995e6)  # 0.5 % faster, tightly measured
    c = compare_latencies(a, b, min_effect=0.01, resamples=500, drift_allowance=0.0)
    assert c.speedup == pytest.approx(1 / 0.995, rel=2e-3)
    assert c.speedup_low > 1.0  # the CI excludes 1 ...
    assert not c.significant and "minimum effect" in c.reason  # ... but 0.5 % is below 1 %
    c0 = compare_latencies(a, b, min_effect=0.0, resamples=500, drift_allowance=0.0)
    assert c0.significant and c0.faster == "candidate"
    d = c0.to_dict()
    assert d["test"] == COMPARISON_TEST
    assert d["speedup_ci"] == [c0.speedup_low, c0.speedup_high]
    assert d["median_ci_ms"][0] == [c0.baseline.low_ms, c0.baseline.high_ms]
    assert 0 <= d["mann_whitney_p"] < 0.05 and "Mann-Whitney" in d["mann_whitney_note"]


# ---------------------------------------------------------------- stability


def _tight(rng, repeats=5, n=50):
    return draw(rng, repeats=repeats, n=n, noise=0.002)


def test_stable_when_tight_and_each_trigger_gives_its_reason():
    rng = np.random.default_rng(10)
    tight = _tight(rng)
    v = assess_stability(tight, "cpu")
    assert v.stable and v.reasons == [] and v.instability == ""

    noisy = draw(rng, repeats=5, n=50, noise=0.2)
    v = assess_stability(noisy, "cpu")
    assert not v.stable and any(r.startswith("samples scatter: robust CV ") for r in v.reasons)

    # repeat medians 1.0, 1.25, 0.9, 1.1, 0.8 ms: their stdev is 17 % of the mean (pyperf's limit: 10 %)
    drifting = [(1e6 * f * (1 + rng.normal(0, 0.002, 50))).astype(np.int64).tolist()
                for f in (1.0, 1.25, 0.9, 1.1, 0.8)]
    v = assess_stability(drifting, "cpu")
    assert v.causes == ["repeats"] and v.repeat_cv == pytest.approx(0.17, abs=0.01)
    assert any(r.startswith("repeat medians disagree: ") and "(CV 17." in r for r in v.reasons)
    # the width of the CI is shown as the interval, not judged: disagreeing repeats make it wide
    assert v.ci_half_width_pct > 8.0 and "ci" not in v.causes

    v = assess_stability(tight, "cuda", device_warnings=["GPU clocks throttled (thermal)"])
    assert v.reasons == ["device: GPU clocks throttled (thermal)"] and not v.stable

    load = HostLoad(
        loadavg_before=(3.0, 2.0, 1.0), loadavg_after=(3.0, 2.0, 1.0), loadavg_max_1min=3.0, usable_cpus=2,
        window_s=1.0, max_other_cpu_pct=95.0, busy=True, reason="other processes using CPU: yes (pid 1) 95 %",
    )
    v = assess_stability(tight, "cpu", host_load=load)
    assert v.reasons == ["host busy: other processes using CPU: yes (pid 1) 95 %"]
    assert "host busy" in v.to_dict()["instability"]


def test_gpu_thresholds_are_stricter_than_cpu():
    rng = np.random.default_rng(11)
    data = draw(rng, repeats=5, n=200, noise=0.05)  # CV about 5 %
    assert "cv" not in assess_stability(data, "cpu").causes
    assert "cv" in assess_stability(data, "cuda").causes
    custom = StabilityThresholds(robust_cv_cpu=0.01)
    assert "cv" in assess_stability(data, "cpu", thresholds=custom).causes
    with pytest.raises(HarnessError):
        assess_stability(data, "tpu")  # type: ignore[arg-type]


# ---------------------------------------------------------------- until stable


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_until_stable_converges_on_quiet_data():
    rng = np.random.default_rng(12)
    clock = FakeClock()

    def run_repeat():
        clock.t += 1.0
        return draw(rng, repeats=1, n=50, noise=0.005)[0]

    res = measure_until_stable(run_repeat, target_ci_pct=1.0, max_seconds=100, clock=clock)
    assert res.converged and res.repeats == 3 and res.seconds == 3.0
    assert res.ci is not None and res.ci.half_width_pct <= 1.0
    assert len(res.repeats_ns) == 3 and "target" in res.stop_reason


def test_until_stable_adds_repeats_then_stops_at_the_budget():
    rng = np.random.default_rng(13)
    clock = FakeClock()

    def run_repeat():
        clock.t += 1.0
        return draw(rng, repeats=1, n=20, noise=0.05, drift=0.2)[0]

    res = measure_until_stable(run_repeat, target_ci_pct=0.1, max_seconds=7, clock=clock, resamples=300)
    assert not res.converged
    assert res.repeats == 7 and res.seconds == 7.0 and "budget" in res.stop_reason
    # a moderate target is reached with more repeats than the minimum
    clock2 = FakeClock()
    rng2 = np.random.default_rng(14)

    def run_repeat2():
        clock2.t += 1.0
        return draw(rng2, repeats=1, n=30, noise=0.02, drift=0.03)[0]

    res2 = measure_until_stable(run_repeat2, target_ci_pct=1.5, max_seconds=200, clock=clock2, resamples=300)
    assert res2.converged and res2.repeats > 3
    assert res2.to_dict()["converged"] is True


# ---------------------------------------------------------------- pick_fastest


def test_pick_fastest_names_a_winner_only_when_significant():
    rng = np.random.default_rng(15)
    fast = draw(rng, mu_ns=0.85e6, drift=0.01)
    mid = draw(rng, mu_ns=1.0e6, drift=0.01)
    slow = draw(rng, mu_ns=1.2e6, drift=0.01)
    pick = pick_fastest({"mid": mid, "fast": fast, "slow": slow})
    assert pick.winner == "fast" and pick.tied == ["fast"]
    assert pick.ranking == ["fast", "mid", "slow"] and "runner-up mid" in pick.reason

    twin = draw(rng, mu_ns=0.85e6, drift=0.01)
    tie = pick_fastest([("fast", fast), ("twin", twin), ("slow", slow)])
    assert tie.winner is None
    assert sorted(tie.tied) == ["fast", "twin"] and "slow" not in tie.tied
    assert "no significant winner" in tie.reason
    assert tie.to_dict()["comparisons"]["slow"]["significant"] is True
    assert pick_fastest({"only": fast}).winner == "only"


def test_discrete_machine_states_do_not_hide_a_ten_percent_change():
    """Repeats land in one of two machine states 40 % apart (SMT sibling idle/busy), and
    some iterations are preempted: the pooled median jumps between the modes, the trimmed
    mean of repeat medians does not, so a 10 % slowdown is still found and a null is not."""
    rng = np.random.default_rng(16)

    def cell(mu, repeats=200, n=10):
        out = []
        for _ in range(repeats):
            state = 1.4 if rng.random() < 0.5 else 1.0
            s = mu * state * (1 + rng.normal(0, 0.02, n))
            s[rng.random(n) < 0.1] *= 20  # preempted iterations
            out.append(s.astype(np.int64).tolist())
        return out

    hits = nulls = 0
    for i in range(8):
        a, b, c = cell(1e6), cell(1e6), cell(1.1e6)
        slow = compare_latencies(a, c, seed=i, resamples=300)
        same = compare_latencies(a, b, seed=i, resamples=300)
        assert slow.statistic == "20 %-trimmed mean of per-repeat medians"
        hits += slow.significant and slow.faster == "baseline"
        nulls += not same.significant
    assert hits >= 7 and nulls >= 7


# ---------------------------------------------------------------- CI expansion only for disagreeing repeats


def test_repeats_that_agree_are_not_blown_up_by_the_small_sample_expansion():
    rng = np.random.default_rng(21)
    one = (1e6 * (1 + rng.normal(0, 0.03, 400))).astype(np.int64).tolist()
    agree = [one, list(one), list(one)]  # three repeats with the same distribution and median
    ci = median_ci(agree, resamples=1000)
    within = median_ci(agree, resamples=1000, method="within")
    assert ci.method == "hierarchical"
    assert ci.half_width_pct <= 1.3 * within.half_width_pct  # not x2.69 (t with 2 df)
    disagree = [one, (np.array(one) * 1.04).astype(np.int64).tolist(), (np.array(one) * 0.97).astype(np.int64).tolist()]
    wide = median_ci(disagree, resamples=1000)
    assert wide.half_width_pct > 3 * ci.half_width_pct


def test_repeat_disagreement_limit_grows_with_the_scatter_inside_repeats():
    rng = np.random.default_rng(22)
    # repeat medians 1.0, 1.25, 1.0: CV 13 %, above the 10 % limit when the repeats resolve it
    short = [(1e6 * f * np.exp(rng.normal(0, 0.6, 12))).astype(np.int64).tolist() for f in (1.0, 1.25, 1.0)]
    v = assess_stability(short, "cpu")
    assert "repeats" not in v.causes and v.repeat_cv_limit > 0.14
    long = [(1e6 * f * (1 + rng.normal(0, 0.01, 2000))).astype(np.int64).tolist() for f in (1.0, 1.25, 1.0)]
    v = assess_stability(long, "cpu")
    assert "repeats" in v.causes and v.repeat_cv_limit == pytest.approx(0.10)


def test_more_repeats_of_the_same_machine_do_not_make_a_window_look_worse():
    """The range of the repeat medians grows with their number; their stdev does not."""
    rng = np.random.default_rng(23)
    verdicts = {}
    for n in (3, 10, 30):
        factors = 1 + rng.normal(0, 0.05, n)  # a machine whose speed moves by 5 % (sd) between repeats
        reps = [(1e6 * f * (1 + rng.normal(0, 0.01, 500))).astype(np.int64).tolist() for f in factors]
        verdicts[n] = assess_stability(reps, "cpu")
    assert all(v.stable for v in verdicts.values()), {n: v.reasons for n, v in verdicts.items()}
    assert verdicts[30].repeat_spread_pct > verdicts[3].repeat_spread_pct


# ---------------------------------------------------------------- paired rounds vs separate windows


def _rounds(rng, factors, n=60, mu_ns=1e6, noise=0.02):
    return [(mu_ns * f * (1 + rng.normal(0, noise, n))).astype(np.int64).tolist() for f in factors]


def test_paired_rounds_cancel_drift_that_hits_both_cells_and_still_find_ten_percent():
    from harness.measure.stats import DESIGN_PAIRED, compare_paired_rounds

    rng = np.random.default_rng(23)
    trials, null_sig, slow_found = 40, 0, 0
    for i in range(trials):
        # the machine's speed changes from round to round by up to 2x (a load step), the same for every cell
        machine = np.exp(rng.normal(0, 0.25, 6))
        a = _rounds(rng, machine * (1 + rng.normal(0, 0.005, 6)))
        b = _rounds(rng, machine * (1 + rng.normal(0, 0.005, 6)))
        c = _rounds(rng, 1.1 * machine * (1 + rng.normal(0, 0.005, 6)))
        same = compare_paired_rounds(a, b, seed=i, resamples=500)
        slower = compare_paired_rounds(a, c, seed=i, resamples=500)
        assert same.design == DESIGN_PAIRED and "rounds" in same.design_note
        null_sig += same.significant
        slow_found += slower.significant and slower.faster == "baseline"
    assert null_sig / trials <= 0.05
    assert slow_found / trials >= 0.95


def test_paired_rounds_need_matching_rounds():
    from harness.measure.stats import compare_paired_rounds

    rng = np.random.default_rng(24)
    with pytest.raises(HarnessError, match="same number"):
        compare_paired_rounds(_rounds(rng, [1, 1, 1]), _rounds(rng, [1, 1, 1, 1]))
    with pytest.raises(HarnessError, match="at least 3 rounds"):
        compare_paired_rounds(_rounds(rng, [1, 1]), _rounds(rng, [1, 1]))


def test_separate_windows_carry_a_drift_allowance_and_say_so():
    from harness.measure.stats import DESIGN_SEPARATE, DRIFT_ALLOWANCE

    rng = np.random.default_rng(25)
    a = _rounds(rng, [1.0, 1.0, 1.0], n=300, noise=0.005)
    b = _rounds(rng, [1.02, 1.02, 1.02], n=300, noise=0.005)  # 2 %: what drift between two windows does
    plain = compare_latencies(a, b, resamples=500, drift_allowance=0.0)
    honest = compare_latencies(a, b, resamples=500)
    assert plain.significant  # the old interval crowns it ...
    assert not honest.significant  # ... the allowance for drift between separate windows does not
    assert honest.design == DESIGN_SEPARATE and "drift allowance" in honest.design_note
    assert honest.speedup_low < plain.speedup_low and honest.speedup_high > plain.speedup_high
    gpu = compare_latencies(a, b, resamples=500, device="cuda")
    assert DRIFT_ALLOWANCE["cuda"] < DRIFT_ALLOWANCE["cpu"] and gpu.speedup_high < honest.speedup_high
    assert honest.to_dict()["design"] == DESIGN_SEPARATE


# ---------------------------------------------------------------- not comparable


def test_a_pair_disturbed_by_the_machine_is_not_comparable_and_never_significant():
    from harness.measure.stats import instability_causes, not_comparable_reason

    rng = np.random.default_rng(26)
    a = _rounds(rng, [1.0, 1.0, 1.0], n=200, noise=0.005)
    c = _rounds(rng, [1.3, 1.3, 1.3], n=200, noise=0.005)
    comp = compare_latencies(a, c, resamples=500)
    assert comp.significant
    busy = {"stable": False, "reasons": ["host busy: other processes using CPU: harness (pid 42) 71 %"],
            "causes": ["host"]}
    scattered = {"stable": False, "reasons": ["median CI half-width 6.0 % > 5.0 %"], "causes": ["ci"]}
    judged = comp.with_stability(busy, {"stable": True, "reasons": []})
    assert not judged.significant and judged.faster is None
    assert judged.reason.startswith("not comparable: baseline host busy: other processes using CPU: harness (pid 42)")
    assert "quiet machine" in judged.reason and "until_stable" in judged.reason
    assert judged.to_dict()["not_comparable"] == judged.reason
    # scatter alone widens the interval but does not forbid the comparison
    assert comp.with_stability(scattered, None) is comp
    # verdicts stored before cause codes existed are read from their reasons
    old = {"stable": False, "reasons": ["CV 12.0 % > 10.0 %", "device: GPU clocks throttled (thermal)"]}
    assert instability_causes(old) == ["cv", "device"]
    assert "candidate device: GPU clocks throttled" in (not_comparable_reason(None, old) or "")
    v = assess_stability(a, "cuda", device_warnings=["GPU clocks throttled (thermal)"])
    assert v.causes == ["device"] and not_comparable_reason(v, None) is not None


def test_pick_fastest_never_crowns_a_not_comparable_pair():
    rng = np.random.default_rng(27)
    fast = _rounds(rng, [0.7, 0.7, 0.7], n=100, noise=0.005)
    slow = _rounds(rng, [1.0, 1.0, 1.0], n=100, noise=0.005)
    cells = {"fast": fast, "slow": slow}
    assert pick_fastest(cells).winner == "fast"
    busy = {"stable": False, "reasons": ["host busy: other processes using CPU: harness (pid 9) 80 %"]}
    verdicts = {"fast": busy, "slow": {"stable": True, "reasons": []}}

    def judged(baseline: str, candidate: str):
        return compare_latencies(cells[baseline], cells[candidate], resamples=300).with_stability(
            verdicts[baseline], verdicts[candidate])

    pick = pick_fastest(cells, compare=judged)
    assert pick.winner is None and set(pick.tied) == {"fast", "slow"}
    assert "not comparable" in pick.reason
