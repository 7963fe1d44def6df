"""How ``harness compare`` shows its rows: the summary table (terminal and Markdown), the per-pair details
(verdict, notes, TensorRT layers, top layers and op types) and the whole comparison as Markdown."""

from __future__ import annotations

from typing import Any, Literal

from harness.measure import stats
from harness.store.outcome import (
    encode_predictions,  # noqa: F401 - re-exported for callers of compare
)

Definition = Literal["compute", "e2e"]
RowStatus = Literal["paired", "refused", "unpaired-baseline", "unpaired-candidate", "failed"]

#: Identity fields a selector may name (``prune_options.x`` / ``calibration.x`` name nested values).
from harness.analysis.compare import CompareResult, _lookup, _named


def _f(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _ci_text(value: Any, ci: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if not ci:
        return format(value, spec)
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _stable_text(side: dict[str, Any] | None) -> str:
    st = (side or {}).get("stability")
    text = "?" if st is None else ("stable" if st["stable"] else "UNSTABLE")
    return f"{text}, host-bound" if (side or {}).get("host_bound") else text


def _counts_text(side: dict[str, Any] | None) -> str:
    counts = (side or {}).get("precision_counts") or {}
    text = " ".join(f"{k}:{counts[k]}" for k in ("int8", "fp8", "fp16", "bf16", "fp32", "other", "reformat")
                    if counts.get(k))
    kept = len((side or {}).get("fp32_nodes") or [])
    if kept:  # Q/DQ nodes an accuracy budget left unquantized, beside the engine's layer counts
        text = f"{text} qdq-fp32-nodes:{kept}".strip()
    return text or "-"


def _kept_text(side: dict[str, Any]) -> str:
    kept = side.get("fp32_nodes") or []
    return ", ".join(f"{e.get('node')} ({e.get('reason')})" for e in kept) or "none"


def _side_label(row: dict[str, Any], which: str, named: set[str]) -> str:
    side = row.get(which)
    if not side:
        return "-"
    ident = side.get("identity") or {}
    parts: list[str] = []
    for k in sorted(named - {"amount", "prune_options", "recover"} if "pruner" in named else named):
        if k == "pruner":
            parts.append(f"{ident.get('pruner')}@{_f(ident.get('amount'), 'g')}"
                         + ("+recover" if ident.get("recover") else ""))
        elif k in ident:
            parts.append(str(_lookup(ident, k)))
    return ",".join(parts) or side.get("label", "-")


def _cell_text(ident: dict[str, Any], named: set[str]) -> str:
    parts = [str(ident.get("model", ""))]
    if "pruner" in ident:
        parts.append(f"{ident['pruner']}@{_f(ident.get('amount'), 'g')}")
    parts += [str(ident[k]) for k in ("backend", "precision") if k in ident and k not in named]
    if "batch_size" in ident and "batch_size" not in named:
        parts.append(f"b{ident['batch_size']}")
    return " ".join(parts)


def table_rows(result: CompareResult, full: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the summary table: the compact set for the terminal, ``full`` adds
    throughput, build+calibration time and TensorRT layer counts (Markdown)."""
    named = _named(result.baseline, result.candidate)
    header = ["cell", "baseline vs candidate", "status", "baseline ms [95% CI]", "candidate ms [95% CI]",
              "speedup [95% CI]", "significant", "top-1 % b / c", "agreement", "MB b / c", "stable b / c"]
    if full:
        header += ["img/s b / c", "build+calib s b / c", "TRT layers b / c"]
    rows: list[list[str]] = []
    for row in result.rows:
        d = row.to_dict()
        b, c = row.baseline or {}, row.candidate or {}

        def prep(side: dict[str, Any]) -> str:
            if not side or "build_s" not in side:
                return "-"
            return f"{(side.get('build_s') or 0) + (side.get('calibrate_s') or 0):.2f}"

        sig = "-" if d["significant"] is None else (f"yes ({d['faster']} faster)" if d["significant"] else "no")
        if d.get("host_bound"):
            sig = "host-bound"
        elif d.get("not_comparable"):
            sig = "not comparable"
        speed = "-" if d["speedup"] is None else _ci_text(d["speedup"], d["speedup_ci"])
        status = row.status if row.refused is None else f"refused: {row.refused}"
        line = [
            _cell_text(row.identity, named),
            f"{_side_label(d, 'baseline', named)} vs {_side_label(d, 'candidate', named)}", status,
            _ci_text(b.get("median_ms"), b.get("median_ci_ms")), _ci_text(c.get("median_ms"), c.get("median_ci_ms")),
            speed, sig, f"{_pct(b.get('accuracy'))} / {_pct(c.get('accuracy'))}", _f(row.agreement, ".4f"),
            f"{_f(b.get('size_mb'), '.2f')} / {_f(c.get('size_mb'), '.2f')}",
            f"{_stable_text(b) if b else '-'} / {_stable_text(c) if c else '-'}",
        ]
        if full:
            line += [f"{_f(b.get('throughput_ips'), '.0f')} / {_f(c.get('throughput_ips'), '.0f')}",
                     f"{prep(b)} / {prep(c)}", f"{_counts_text(b)} / {_counts_text(c)}"]
        rows.append(line)
    return header, rows


def _calib_text(calib: Any) -> str:
    """The calibration identity in a few words (method, bins, images, image-set hash), or '-'."""
    if not isinstance(calib, dict):
        return "-"
    settings = next((calib[k] for k in ("calibration", "settings") if isinstance(calib.get(k), dict)), {})
    parts = [str(calib.get("method", "?"))]
    if calib.get("tool", "harness") != "harness":
        parts.insert(0, str(calib["tool"]))
    bins = calib.get("num_bins", settings.get("num_bins"))
    if bins is not None:
        parts.append(f"{bins} bins")
    count = calib.get("count")
    if count is not None:
        parts.append(f"{count} images")
    for key in ("calib_file_list_hash", "image_set_hash", "images_hash"):
        if calib.get(key):
            parts.append(f"set {str(calib[key])[:12]}")
            break
    return " ".join(parts)


def detail_lines(result: CompareResult) -> list[str]:
    """Per-pair details: verdict, notes, layers not in INT8, top layers and op types by time."""
    lines: list[str] = []
    for row in result.rows:
        if row.status not in ("paired", "refused"):
            if row.notes:
                lines.append(f"{(row.baseline or row.candidate or {}).get('label', '?')} ({row.status}): "
                             + "; ".join(row.notes))
            continue
        b, c = row.baseline or {}, row.candidate or {}
        head = f"{b.get('label')} vs {c.get('label')}"
        verdict = row.comparison.reason if row.comparison is not None else f"refused: {row.refused}"
        lines.append(f"{head}: {verdict}")
        lines.append(
            f"  throughput {_ci_text(b.get('throughput_ips'), b.get('throughput_ci_ips'), '.0f')} vs "
            f"{_ci_text(c.get('throughput_ips'), c.get('throughput_ci_ips'), '.0f')} img/s; "
            f"build {_f(b.get('build_s'), '.2f')} vs {_f(c.get('build_s'), '.2f')} s; "
            f"calibration {_f(b.get('calibrate_s'), '.2f')} vs {_f(c.get('calibrate_s'), '.2f')} s")
        if b.get("calibration") or c.get("calibration"):
            lines.append(f"  calibration: {_calib_text(b.get('calibration'))} vs {_calib_text(c.get('calibration'))}")
        if b.get("precision_counts") or c.get("precision_counts") or b.get("fp32_nodes") or c.get("fp32_nodes"):
            lines.append(f"  TensorRT layers (reformat = reformat layers): {_counts_text(b)} vs {_counts_text(c)}")
        for name, side in (("baseline", b), ("candidate", c)):
            if side.get("fp32_nodes") or side.get("sensitivity_top"):
                top = ", ".join(f"{r['node']} {_f(r.get('harm_points'), '.2f')} pts" for r in side["sensitivity_top"])
                lines.append(f"  {name} Q/DQ nodes kept in FP32 by the accuracy budget: {_kept_text(side)}; "
                             f"most harmful in INT8: {top or '-'}")
            if side.get("recovery"):
                r = side["recovery"]
                lines.append(f"  {name} recovered after pruning: {r.get('steps')} steps, {_f(r.get('seconds'), '.1f')} s; "
                             f"torch top-1 before {_pct(r.get('accuracy_before'))} %, after {_pct(r.get('accuracy_after'))} %")
        for note in row.notes:
            lines.append(f"  note: {note}")
        for name, side in (("baseline", b), ("candidate", c)):
            if side.get("top_op_types"):
                ops = ", ".join(f"{o.get('op_type')} {_f(o.get('ms'))} ms ({_pct(o.get('share'))} %)"
                                for o in side["top_op_types"])
                lines.append(f"  {name} top op types ({side.get('layer_profile_source')}): {ops}")
            if side.get("top_layers"):
                layers = ", ".join(f"{r.get('name')}{' [' + str(r['precision']) + ']' if r.get('precision') else ''}"
                                   f" {_f(r.get('ms'))} ms" for r in side["top_layers"])
                lines.append(f"  {name} top layers: {layers}")
        if row.not_int8_layers:
            names = ", ".join(f"{r['name']} ({r['precision']})" for r in row.not_int8_layers[:20])
            more = len(row.not_int8_layers) - 20
            lines.append(f"  layers not in INT8: {names}" + (f" and {more} more" if more > 0 else ""))
    designs = sorted({r.comparison.design for r in result.rows if r.comparison is not None})
    tests = sorted({r.comparison.test for r in result.rows if r.comparison is not None}) or [stats.COMPARISON_TEST]
    lines.append(f"test: {'; '.join(tests)}; design: {', '.join(designs) or '-'}; speedup = baseline / candidate "
                 f"(> 1: candidate faster); timing definition: {result.definition}")

    return lines


def to_markdown(result: CompareResult) -> str:
    header, rows = table_rows(result, full=True)

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"# Comparison: {esc(result.baseline.text)} vs {esc(result.candidate.text)} ({result.definition})", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    out += ["", *(f"- {esc(line.strip())}" if not line.startswith("  ") else f"  - {esc(line.strip())}"
                  for line in detail_lines(result)), ""]
    return "\n".join(out)


def rich_table(result: CompareResult) -> Any:
    """The summary as a rich Table; every cell is a plain Text (user values are never markup)."""
    from rich.table import Table
    from rich.text import Text

    header, rows = table_rows(result)
    table = Table(title=Text(f"compare ({result.definition}): baseline {result.baseline.text} vs candidate "
                             f"{result.candidate.text}"))
    for col in header:
        table.add_column(Text(col), overflow="fold")
    for r in rows:
        table.add_row(*(Text(c) for c in r))
    return table


__all__ = ["detail_lines", "rich_table", "table_rows", "to_markdown"]
