"""Reports: plots and a Markdown summary from a results database.

Answers the project's question per model and dataset: which pruning and quantization, on which
backend, gives the best speed, size and accuracy, and why (theoretical against measured speedup,
device warnings, what failed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.outcome import CellOutcome
from harness.results import ResultStore, flat_rows


@dataclass(frozen=True)
class Point:
    model: str
    dataset: str
    pruner: str  # method, with the importance for removal
    amount: float
    backend: str  # "backend precision"
    batch: int
    accuracy: float | None
    latency_ms: float
    throughput: float
    size_mb: float | None
    macs_before: float | None
    macs_after: float | None


def collect_points(store: ResultStore, definition: str = "compute") -> tuple[list[Point], list[CellOutcome]]:
    """Successful cells as points (one timing definition), and the failed cells."""
    points: list[Point] = []
    failures: list[CellOutcome] = []
    for record in store.records():
        if record.status != "ok":
            failures.append(record)
            continue
        options = record.identity.prune_options
        pruner = record.identity.pruner
        if pruner == "removal":
            pruner = f"removal-{options.get('importance', '?')}"
        for row in flat_rows(record):
            if row.get("timing_definition") != definition:
                continue
            points.append(Point(
                model=row["Model"], dataset=row["Dataset"], pruner=pruner, amount=float(row["Amount"]),
                backend=f"{row['backend']} {row['precision']}", batch=int(row["Batch Size"]),
                accuracy=row["Accuracy"], latency_ms=row["Inference Time (ms)"], throughput=row["throughput_ips"],
                size_mb=row["Compressed Size"], macs_before=row["macs_before"], macs_after=row["macs_after"],
            ))
    return points, failures


def _groups(points: Iterable[Point]) -> dict[tuple[str, str], list[Point]]:
    out: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for p in points:
        out[(p.model, p.dataset)].append(p)
    return out


def write_report(store: ResultStore, out_dir: Path, definition: str = "compute") -> list[Path]:
    """Write PNG plots and report.md into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    points, failures = collect_points(store, definition)
    written: list[Path] = []
    lines = [f"# PQ Harness report ({definition} timing)", ""]
    for (model, dataset), pts in _groups(points).items():
        stem = f"{_safe(model)}-{dataset}"
        lines += [f"## {model} on {dataset}", ""]
        batch = max(p.batch for p in pts)
        at_batch = [p for p in pts if p.batch == batch]

        fig, axes = plt.subplots(1, 3, figsize=(18, 5))
        _accuracy_vs_amount(axes[0], at_batch)
        _latency_vs_batch(axes[1], [p for p in pts if p.pruner == "none"])
        _pareto(axes[2], at_batch, batch)
        fig.suptitle(f"{model} on {dataset}")
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        lines += [f"![{model} on {dataset}]({path.name})", ""]

        speed = _speedup_rows(at_batch)
        if speed:
            lines += [f"Theoretical (MACs) against measured speedup of structural removal, batch {batch}:", "",
                      "| pruner | amount | backend | MACs speedup | measured speedup |", "|---|---|---|---|---|"]
            lines += [f"| {r['pruner']} | {r['amount']:g} | {r['backend']} | {r['theoretical']:.2f} | "
                      f"{r['measured']:.2f} |" for r in speed]
            lines.append("")
        lines += _best_table(at_batch, batch)
    if failures:
        lines += ["## Failed cells", ""]
        lines += [f"- {f.identity.label}: {f.error}" for f in failures]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    written.append(md)
    return written


def _accuracy_vs_amount(ax: Any, pts: list[Point]) -> None:
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    base = {p.backend: p.accuracy for p in pts if p.pruner == "none" and p.accuracy is not None}
    for p in pts:
        if p.accuracy is None or p.pruner == "none":
            continue
        series[(p.pruner, p.backend)].append((p.amount, p.accuracy))
    for (pruner, backend), xy in sorted(series.items()):
        if backend in base:
            xy = [(0.0, base[backend]), *xy]
        xy.sort()
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=f"{pruner} ({backend})")
    ax.set_xlabel("pruning amount")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title("accuracy against amount")
    if series:
        ax.legend(fontsize=7)


def _latency_vs_batch(ax: Any, pts: list[Point]) -> None:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for p in pts:
        series[p.backend].append((p.batch, p.throughput))
    for backend, xy in sorted(series.items()):
        xy.sort()
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=backend)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median batch latency)")
    ax.set_title("throughput of the unpruned model")
    if series:
        ax.legend(fontsize=7)


def _pareto(ax: Any, pts: list[Point], batch: int) -> None:
    by_backend: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        if p.accuracy is not None:
            by_backend[p.backend].append(p)
    for backend, group in sorted(by_backend.items()):
        ax.scatter([p.latency_ms for p in group], [p.accuracy for p in group], label=backend, s=18)
    ax.set_xlabel(f"median batch latency, ms (batch {batch})")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title("accuracy against latency (every pruning cell)")
    if by_backend:
        ax.legend(fontsize=7)


def _speedup_rows(pts: list[Point]) -> list[dict[str, Any]]:
    base = {p.backend: p.latency_ms for p in pts if p.pruner == "none"}
    rows = []
    for p in pts:
        if p.pruner.startswith("removal") and p.macs_after and p.macs_before and p.backend in base:
            rows.append({"pruner": p.pruner, "amount": p.amount, "backend": p.backend,
                         "theoretical": p.macs_before / p.macs_after, "measured": base[p.backend] / p.latency_ms})
    return sorted(rows, key=lambda r: (r["pruner"], r["backend"], r["amount"]))


def _best_table(pts: list[Point], batch: int, max_drop: float = 0.01) -> list[str]:
    """Per backend: the fastest cell whose accuracy is within ``max_drop`` of its unpruned base."""
    base = {p.backend: p for p in pts if p.pruner == "none"}
    lines = [f"Fastest configuration per backend within {max_drop * 100:g} point(s) of the unpruned fp32 accuracy "
             f"(batch {batch}):", "", "| backend | pruning | top-1 | ms | img/s | MB |", "|---|---|---|---|---|---|"]
    reference = max((p.accuracy for p in base.values() if p.accuracy is not None), default=None)
    for backend in sorted({p.backend for p in pts}):
        ok = [p for p in pts if p.backend == backend and
              (reference is None or (p.accuracy is not None and p.accuracy >= reference - max_drop))]
        if not ok:
            lines.append(f"| {backend} | none qualifies | | | | |")
            continue
        best = min(ok, key=lambda p: p.latency_ms)
        pruning = "-" if best.pruner == "none" else f"{best.pruner} {best.amount:g}"
        acc = "-" if best.accuracy is None else f"{best.accuracy:.3f}"
        size = "-" if best.size_mb is None else f"{best.size_mb:.2f}"
        lines.append(f"| {backend} | {pruning} | {acc} | {best.latency_ms:.3f} | {best.throughput:.0f} | {size} |")
    return [*lines, ""]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
