"""How a recommendation reads: the lines ``harness recommend`` prints and the report's section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from harness.analysis.recommend import (
    DEFAULT_MAX_DROP_POINTS,
    UNITS,
    Recommendation,
    _group_key,
    _group_text,
    recommend,
)
from harness.errors import HarnessError
from harness.store.outcome import CellOutcome

Objective = Literal["latency", "throughput", "size", "energy"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput", "size", "energy")
#: Smallest relative difference called better, for sizes and energy (the latency comparisons' own
#: minimum effect, :func:`harness.measure.stats.compare_latencies`).


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ci(value: Any, ci: Any, spec: str) -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def render_lines(rec: Recommendation) -> list[str]:
    """Plain lines for the terminal and the report (no markup)."""
    g = rec.group
    head = (f"Recommendation for {g['model']} on {g['dataset']}, batch {rec.batch_size}, objective {rec.objective} "
            f"({rec.definition} timing), accuracy budget {rec.budget['max_accuracy_drop_points']:g} point(s) "
            "below the uncompressed baseline of each backend family:")
    lines = [head, f"  verdict: {rec.verdict}: {rec.why}"]
    for n in rec.numbers:
        acc = _ci(None if n["accuracy"] is None else 100 * n["accuracy"],
                  None if not n["accuracy_ci"] else [100 * x for x in n["accuracy_ci"]], ".2f")
        speed = ""
        if n["speedup_vs_baseline"] is not None:
            speed = (f"; speedup over its baseline {_ci(n['speedup_vs_baseline'], n['speedup_vs_baseline_ci'], '.3f')}"
                     f" ({'significant' if n['speedup_significant'] else 'not significant'})")
        lines.append(f"  - {n['label']} [{n['key']}]: top-1 {acc} % (drop {_f(n['accuracy_drop_points'], '.2f')}), "
                     f"{_ci(n['median_ms'], n['median_ci_ms'], '.3f')} ms, "
                     f"{_ci(n['throughput_ips'], n['throughput_ci_ips'], '.0f')} img/s, "
                     f"{_f(n['size_mb'], '.3f')} MB{speed}")
    if rec.alternatives:
        lines.append("  alternatives (Pareto front of objective against accuracy):")
        for a in rec.alternatives:
            lines.append(f"  - {a['label']}: top-1 {_f(None if a['accuracy'] is None else 100 * a['accuracy'], '.2f')} %"
                         f", {rec.objective} {_f(a['objective_value'], '.4g')} {UNITS[rec.objective]}"
                         f"{'' if a['within_budget'] else ' (outside the budget)'}")
    if rec.excluded:
        lines.append("  excluded:")
        lines += [f"  - {e['label']}: {e['reason']}" for e in rec.excluded]
    nodes = ", ".join(str(n.get("hostname")) + (f" / {n['gpu_name']}" if n.get("gpu_name") else "")
                      for n in rec.measured_on["nodes"]) or "not recorded"
    lines.append(f"  measured on: {nodes}; {', '.join(rec.measured_on['devices']) or '-'}")
    return lines


def recommendation_section(records: Sequence[CellOutcome], definition: str = "compute") -> list[str]:
    """``## Recommendation`` for the report: one latency recommendation per model x dataset group."""
    keys = list(dict.fromkeys(_group_key(r) for r in records))
    lines: list[str] = []
    for key in keys:
        model, _weights, dataset, _size = key
        group = [r for r in records if _group_key(r) == key]
        try:
            rec = recommend(group, model=model, dataset=dataset, definition=definition)
        except HarnessError as exc:
            lines += [f"- {_group_text(key)}: no recommendation ({exc})"]
            continue
        body = render_lines(rec)
        lines += [f"### {_group_text(key)}", "", body[0], "", *(ln.strip() for ln in body[1:]), ""]
    if lines:
        lines = ["## Recommendation", "", ("From `harness recommend` (defaults: latency at the smallest batch, "
                                           f"{DEFAULT_MAX_DROP_POINTS:g} point budget); a cell is named only "
                                           "when significantly faster than the runner-up."), "", *lines]
    return lines


__all__ = ["recommendation_section", "render_lines"]
