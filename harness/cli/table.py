"""The results table of ``harness run`` and ``harness results show``: median and CI per timing definition,
``!`` for unstable, ``H`` for host-bound and ``~`` for emulated windows, one summary line per kind."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import console


def print_table(store: Any, unstable: bool = False) -> None:
    """One line per cell: median batch latency under both timing definitions, side by side, each with
    its 95 % CI half-width; "!" marks an unstable measurement. Below the table one line counts the
    unstable windows by cause; with ``unstable`` each window's reasons are listed too."""

    from harness.measure.instability import summarize
    from harness.store.outcome import CellResult, latency_is_emulated
    from harness.store.results import megabytes, percent

    table = Table(title="results: median batch latency ±95 % CI half-width (compute = input already on the "
                        "device; e2e = host in, host out); ! = unstable; H = host-bound; ~ = emulated (not a "
                        "measurement of that precision's hardware)")
    for col, justify in (("model", "left"), ("pruning", "left"), ("backend", "left"), ("batch", "right"),
                         ("top-1", "right"), ("compute ms", "right"), ("e2e ms", "right"), ("p99 ms", "right"),
                         ("img/s", "right"), ("MB", "right"), ("status", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    notes: list[str] = []
    verdicts: list[dict[str, Any] | None] = []
    host_bound: list[tuple[str, str]] = []  # (cell and definition, backend) of host-bound GPU windows
    gpu_windows = 0
    for record in store.records():
        ident, result = record.identity, record.result or CellResult()
        windows = {"compute": result.timing("compute"), "e2e": result.timing("e2e")}
        main = windows["compute"] or windows["e2e"]
        pruning = "-" if ident.pruner == "none" else f"{ident.pruner} {ident.amount:g}"
        pruning += " +recover" if ident.recover else ""
        budget = (ident.int8 or {}).get("max_accuracy_drop")
        variant = "" if not ident.int8 else (f" budget {budget:g}" if budget is not None else " +sensitivity")
        cells = []
        for definition, window in windows.items():
            text = _latency(window)
            verdict = (window.stability if window is not None else None) or {}
            if window is not None:
                verdicts.append(verdict or None)
            if verdict.get("stable") is False:
                notes.append(f"{ident.label} {definition}: {'; '.join(verdict.get('reasons') or []) or 'unstable'}")
                text += f" !{len(notes)}" if unstable else " !"
            if window is not None and window.launch is not None:
                gpu_windows += 1
                if window.host_bound:
                    host_bound.append((f"{ident.label} {definition}", ident.backend))
                    text += " H"
            cells.append(Text(f"~{text}" if window is not None and latency_is_emulated(result) else text))
        status = Text("ok") if record.status == "ok" else Text((record.error or "")[:80], style="red")
        table.add_row(
            Text(ident.model), Text(pruning), Text(f"{ident.backend} {ident.precision}{variant}"),
            str(ident.batch_size), _fmt(percent(result.top1), ".2f"), *cells,
            _fmt(None if main is None else main.stats["p99_ms"], ".3f"),
            _fmt(None if main is None else main.throughput_ips, ".0f"),
            _fmt(megabytes(result.compressed_size_bytes), ".2f"), status,
        )
    console.print(table)
    summary = summarize(verdicts)
    if summary.windows:
        console.print(Text(summary.line), highlight=False)
    if host_bound:
        console.print(Text(host_bound_line(host_bound, gpu_windows)), highlight=False)
    if notes and not unstable:
        console.print("(! = unstable; each window's reasons: harness results show --unstable, or harness report)",
                      highlight=False)
    if notes and unstable:
        console.print(f"{len(notes)} unstable measurement(s) (! marks; compare them with care):", highlight=False)
        for i, note in enumerate(notes, 1):
            console.print(Text(f"  !{i} {note}"), highlight=False)


def host_bound_line(host_bound: list[tuple[str, str]], gpu_windows: int) -> str:
    """One line for the host-bound windows of a table: how many, what it means, the fix."""
    from harness.measure.launch import HOST_BOUND_MEANING, launch_fix

    backends = sorted({backend for _, backend in host_bound})
    return (f"H: {len(host_bound)} of {gpu_windows} GPU windows host-bound: {HOST_BOUND_MEANING}; a difference "
            f"between two host-bound cells compares the launch path, not precision or pruning; "
            + "; ".join(launch_fix(b) if len(backends) == 1 else f"{b}: {launch_fix(b)}" for b in backends))


def _latency(window: Any) -> str:  # a harness.store.outcome.TimingWindow or None
    """"12.345 ±0.400" (median and CI half-width), or just the median for results stored without a CI."""
    if window is None:
        return "-"
    ci = window.ci or {}
    low, high = ci.get("low_ms"), ci.get("high_ms")
    if low is None or high is None:
        return format(window.median_ms, ".3f")
    return f"{window.median_ms:.3f} ±{(high - low) / 2:.3f}"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)
