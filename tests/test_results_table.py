"""The CLI's results table: medians with their CI, unstable cells marked, user text printed literally."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.measure.stats import assess_stability, median_ci
from harness.measure.timing import TimingResult, TimingSettings
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow
from harness.store.results import ResultStore, flat_rows


def _timing(definition: str, repeats_ns: list[list[int]], host_load: object = None) -> TimingWindow:
    result = TimingResult(definition=definition, timer="perf_counter_ns", batch_size=4,
                          config=TimingSettings(repeats=len(repeats_ns)), repeats_ns=repeats_ns)
    ci = median_ci(repeats_ns, batch_size=4)
    verdict = assess_stability(repeats_ns, "cpu", ci, host_load=host_load)
    return TimingWindow.from_dict({**result.to_dict(), "ci": ci.to_dict(), "stability": verdict.to_dict(),
                                   "until_stable": None})


class _Busy:
    busy = True
    reason = "other processes using CPU: [bold]evil[/bold] (pid 7) 90 %"


def test_table_shows_ci_and_marks_unstable_cells_with_literal_reasons(tmp_path: Path, monkeypatch) -> None:
    import harness.cli.table as cli

    steady = [[10_000_000 + i * 1000 for i in range(20)] for _ in range(3)]
    wild = [[10_000_000, 30_000_000, 11_000_000, 50_000_000, 12_000_000] for _ in range(3)]
    identity = CellIdentity(model="[red]m[/red]", weights="pretrained", dataset="shapes", dataset_size=None,
                            pruner="none", amount=0.0, prune_options={}, backend="torch", precision="fp32",
                            batch_size=4)
    result = CellResult(timings=[_timing("compute", steady), _timing("e2e", wild, _Busy())], device="cpu")
    with ResultStore(tmp_path / "results.db") as store:
        store.put(CellOutcome.ok(identity, result))
        rows = {r["timing_definition"]: r for r in flat_rows(next(store.records()))}
        assert rows["compute"]["stable"] is True and rows["e2e"]["stable"] is False
        console = Console(record=True, width=400)
        monkeypatch.setattr(cli, "console", console)
        cli.print_table(store)
        text = console.export_text()
        detailed = Console(record=True, width=400)
        monkeypatch.setattr(cli, "console", detailed)
        cli.print_table(store, unstable=True)
    compute = rows["compute"]
    half = (compute["latency_median_ci_high_ms"] - compute["latency_median_ci_low_ms"]) / 2
    assert f"{compute['Inference Time (ms)']:.3f} ±{half:.3f}" in text
    (row,) = [line for line in text.splitlines() if "torch fp32" in line and "│" in line]
    assert row.split("│")[7].strip().endswith("!")  # the e2e cell carries the unstable mark
    assert not row.split("│")[6].strip().endswith("!")
    assert "[red]m[/red]" in row.split("│")[1]  # a model name is data, not markup
    # by default one summary line by cause, no per-window footnotes
    assert "1 of 2 windows unstable: host busy ([bold]evil[/bold], pid 7) 1" in text
    assert "samples scatter" in text and "harness results show --unstable" in text
    assert "unstable measurement(s)" not in text
    # --unstable lists each window's reasons, literally
    listed = detailed.export_text()
    (row,) = [line for line in listed.splitlines() if "torch fp32" in line and "│" in line]
    assert row.split("│")[7].strip().endswith("!1") and "1 unstable measurement(s)" in listed
    assert "host busy: other processes using CPU: [bold]evil[/bold]" in listed
    assert "samples scatter: robust CV " in listed  # the reasons themselves are listed
