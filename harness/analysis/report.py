"""Reports: plots and a Markdown summary from a results database.

Answers the project's question per model and dataset: which pruning and quantization, on which
backend, gives the best speed, size and accuracy, and why (theoretical against measured speedup,
device warnings, what failed). A configuration is called *fastest* only when it is significantly
faster than the runner-up (:func:`harness.measure.stats.pick_fastest` over the raw samples); otherwise the
report names the tie and the tied set. The Pareto front (accuracy, latency, size) carries the
latency CIs and the accuracy's Wilson interval as error bars, and a comparison section puts EP vs
native (ort-trt vs trt-native) and INT8 vs FP16 (and INT8 vs FP32) side by side with
:mod:`harness.analysis.compare` when the data has them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis.pairing import window_comparison
from harness.measure import stats
from harness.measure.instability import summarize
from harness.measure.launch import HOST_BOUND_MEANING, launch_fix
from harness.measure.proportions import wilson_interval
from harness.store.outcome import CellOutcome, TimingWindow, latency_is_emulated
from harness.store.results import ResultStore, megabytes


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
    samples_ns: list[list[int]] | None = None  # raw samples per repeat of this timing definition
    latency_ci_ms: tuple[float, float] | None = None
    accuracy_samples: int | None = None
    stable: bool | None = None
    instability: str = ""
    key: str = ""
    timer: str | None = None
    stability: dict[str, Any] | None = None  # stable, reasons (cause codes read from them)
    device: str = "cpu"
    window: TimingWindow | None = None  # the measured window itself (what comparisons read)
    device_warnings: tuple[str, ...] = ()
    host_bound: str | None = None  # what it means and the fix, when the GPU waited for the host
    emulated: str | None = None  # why the latency measures an emulation (never ranked): latency_is_emulated

    @property
    def label(self) -> str:
        pruning = "unpruned" if self.pruner == "none" else f"{self.pruner} {self.amount:g}"
        return f"{self.backend} ({pruning})"

    @property
    def accuracy_ci(self) -> tuple[float, float] | None:
        """95 % Wilson interval of the top-1 accuracy over the evaluated images."""
        if self.accuracy is None or not self.accuracy_samples:
            return None
        return wilson_interval(self.accuracy, self.accuracy_samples)


def collect_points(store: ResultStore, definition: str = "compute") -> tuple[list[Point], list[CellOutcome]]:
    """Successful cells as points (one timing definition), and the failed cells."""
    points: list[Point] = []
    failures: list[CellOutcome] = []
    for record in store.records():
        if record.status != "ok":
            failures.append(record)
            continue
        ident, result = record.identity, record.result
        assert result is not None
        timing = result.timing(definition)
        if timing is None:
            continue
        pruner = ident.pruner
        if pruner == "removal":
            pruner = f"removal-{ident.prune_options.get('importance', '?')}"
        pruning = result.pruning or {}
        uncertainty = timing.uncertainty(result.device, result.device_warnings)
        points.append(Point(
            model=ident.model, dataset=ident.dataset, pruner=pruner, amount=float(ident.amount),
            backend=f"{ident.backend} {ident.precision}", batch=int(ident.batch_size),
            accuracy=result.top1, latency_ms=timing.median_ms, throughput=timing.throughput_ips,
            size_mb=megabytes(result.compressed_size_bytes), macs_before=pruning.get("macs_before"),
            macs_after=pruning.get("macs_after"), samples_ns=timing.samples_ns or None,
            latency_ci_ms=uncertainty.ci_ms, accuracy_samples=(result.accuracy or {}).get("samples"),
            stable=uncertainty.stable, instability=uncertainty.instability, key=record.key, timer=timing.timer,
            stability=None if uncertainty.stable is None else {"stable": uncertainty.stable,
                                                               "reasons": list(uncertainty.reasons)},
            device="cuda" if result.device == "cuda" else "cpu",
            window=timing, device_warnings=tuple(result.device_warnings),
            host_bound=timing.launch_check.reason(ident.backend) if timing.host_bound and timing.launch_check
            else None,
            emulated=latency_is_emulated(result),
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
    summary = summarize(p.stability for p in points)
    if summary.unstable:
        lines += [f"Stability: {summary.line} (each window's reasons are in the tables below; a pair with a "
                  "window the machine disturbed is not comparable and never named fastest).", ""]
    lines += host_bound_lines(points)
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
                      f"{_measured_speedup(r)} |" for r in speed]
            lines.append("")
        lines += _best_table(at_batch, batch)
        lines += _pareto_table(at_batch, batch)
    records = list(store.records())
    lines += recommendation_section(records, definition)
    lines += comparison_section(records, definition)
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


def pareto_front(pts: Sequence[Point]) -> list[Point]:
    """Points no other point beats on all of accuracy (higher), latency and size (lower), strictly on one.
    Points without accuracy, and points whose latency is an emulation, are left out; a missing size counts as
    unknown (never dominates on size)."""
    cands = [p for p in pts if p.accuracy is not None and not p.emulated]

    def no_worse(a: Point, b: Point) -> bool:
        size_ok = a.size_mb is not None and (b.size_mb is None or a.size_mb <= b.size_mb)
        return bool(a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms and (size_ok or b.size_mb is None))

    def better(a: Point, b: Point) -> bool:
        return bool(a.accuracy > b.accuracy or a.latency_ms < b.latency_ms
                    or (a.size_mb is not None and b.size_mb is not None and a.size_mb < b.size_mb))

    front = [p for p in cands if not any(q is not p and no_worse(q, p) and better(q, p) for q in cands)]
    return sorted(front, key=lambda p: p.latency_ms)


def _pareto(ax: Any, pts: list[Point], batch: int) -> None:
    """Accuracy against latency, every cell with its latency CI and accuracy Wilson interval as error
    bars, marker area by size; the accuracy/latency/size Pareto front ringed and joined."""
    by_backend: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        if p.accuracy is not None:
            by_backend[p.backend].append(p)
    sizes = [p.size_mb for p in pts if p.size_mb]
    biggest = max(sizes) if sizes else 1.0
    for backend, group in sorted(by_backend.items()):
        xs = [p.latency_ms for p in group]
        ys = [p.accuracy for p in group]
        xerr = [[max(0.0, p.latency_ms - (p.latency_ci_ms or (p.latency_ms, p.latency_ms))[0]) for p in group],
                [max(0.0, (p.latency_ci_ms or (p.latency_ms, p.latency_ms))[1] - p.latency_ms) for p in group]]
        yerr = [[max(0.0, p.accuracy - (p.accuracy_ci or (p.accuracy, p.accuracy))[0]) for p in group],
                [max(0.0, (p.accuracy_ci or (p.accuracy, p.accuracy))[1] - p.accuracy) for p in group]]
        dots = ax.scatter(xs, ys, s=[20 + 180 * (p.size_mb or 0) / biggest for p in group], label=backend,
                          alpha=0.8)
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", elinewidth=0.8, alpha=0.6,
                    ecolor=dots.get_facecolor()[0])
    front = pareto_front(pts)
    if front:
        ax.plot([p.latency_ms for p in front], [p.accuracy for p in front], color="black", linewidth=0.8,
                linestyle="--", label="Pareto front (accuracy, latency, size)")
        ax.scatter([p.latency_ms for p in front], [p.accuracy for p in front], s=90, facecolors="none",
                   edgecolors="black")
    shown = [p for p in pts if p.accuracy is not None]
    if shown:
        # log scale; a CI wider than 10x its median (a very noisy cell) runs off the edge instead of
        # squashing every other point into one pixel
        lows, highs = [p.latency_ms for p in shown], [p.latency_ms for p in shown]
        for p in shown:
            if p.latency_ci_ms and p.latency_ci_ms[0] >= p.latency_ms / 10:
                lows.append(p.latency_ci_ms[0])
            if p.latency_ci_ms and p.latency_ci_ms[1] <= p.latency_ms * 10:
                highs.append(p.latency_ci_ms[1])
        ax.set_xscale("log")
        ax.set_xlim(min(lows) / 1.2, max(highs) * 1.2)
    ax.set_xlabel(f"median batch latency, ms, 95 % CI (batch {batch}; log scale)")
    ax.set_ylabel("top-1 accuracy (95 % Wilson interval)")
    ax.set_title("accuracy against latency; marker area = size")
    if by_backend:
        ax.legend(fontsize=7)


def _ci_ms(p: Point) -> str:
    if p.latency_ci_ms is None:
        return f"{p.latency_ms:.3f}"
    return f"{p.latency_ms:.3f} [{p.latency_ci_ms[0]:.3f}, {p.latency_ci_ms[1]:.3f}]"


def _acc_pct(p: Point) -> str:
    return "-" if p.accuracy is None else f"{100 * p.accuracy:.2f}"


def _stable_mark(p: Point) -> str:
    text = "?" if p.stable is None else ("stable" if p.stable else f"UNSTABLE ({p.instability})")
    return f"{text}; host-bound" if p.host_bound else text


def _pareto_table(pts: list[Point], batch: int) -> list[str]:
    front = pareto_front(pts)
    if not front:
        return []
    lines = [(f"Pareto front over accuracy, latency and size (batch {batch}; no other cell is at least as good on "
              "all three and better on one; latency with its 95 % CI):"), "",
             "| configuration | top-1 % | ms [95% CI] | MB | measurement |", "|---|---|---|---|---|"]
    lines += [f"| {p.label} | {_acc_pct(p)} | {_ci_ms(p)} | {'-' if p.size_mb is None else f'{p.size_mb:.2f}'} | "
              f"{_stable_mark(p)} |" for p in front]
    return [*lines, ""]


def _speedup_rows(pts: list[Point]) -> list[dict[str, Any]]:
    base = {p.backend: p for p in pts if p.pruner == "none"}
    rows = []
    for p in pts:
        if p.pruner.startswith("removal") and p.macs_after and p.macs_before and p.backend in base:
            unpruned = base[p.backend]
            rows.append({"pruner": p.pruner, "amount": p.amount, "backend": p.backend,
                         "theoretical": p.macs_before / p.macs_after, "measured": unpruned.latency_ms / p.latency_ms,
                         "host_bound": bool(unpruned.host_bound and p.host_bound)})
    return sorted(rows, key=lambda r: (r["pruner"], r["backend"], r["amount"]))


def _measured_speedup(row: dict[str, Any]) -> str:
    """The measured speedup, or why it says nothing about the pruning (both cells host-bound)."""
    if row["host_bound"]:
        return f"{row['measured']:.2f} (host-bound: both cells timed kernel launches, not the GPU)"
    return f"{row['measured']:.2f}"


def host_bound_lines(points: Sequence[Point]) -> list[str]:
    """The report's paragraph on host-bound windows: how many, which, what it means and the fix."""
    bound = [p for p in points if p.host_bound]
    if not bound:
        return []
    gpu = sum(1 for p in points if p.window is not None and p.window.launch is not None)
    names = ", ".join(f"{p.label} b{p.batch}" for p in bound[:12]) + (" ..." if len(bound) > 12 else "")
    backends = sorted({p.backend.split()[0] for p in bound})
    fixes = "; ".join(f"{b}: {launch_fix(b)}" for b in backends)
    return [f"Host-bound: {len(bound)} of {gpu} GPU windows ({names}): {HOST_BOUND_MEANING}. A speedup (or its "
            f"absence) between two host-bound cells compares the launch path, not precision or pruning, and is "
            f"never credited to them. Fix: {fixes}.", ""]


def _unique_labels(pts: Sequence[Point]) -> dict[str, Point]:
    out: dict[str, Point] = {}
    for p in pts:
        label = p.label if p.label not in out else f"{p.label} ({p.key[:8]})"
        out[label] = p
    return out


def fastest_verdict(pts: Sequence[Point]) -> tuple[str, stats.FastestPick | None]:
    """One line: ``fastest: X`` only when X is significantly faster than the runner-up
    (stats.pick_fastest over the raw samples), else ``tie: X, Y, ...`` with the tied set."""
    labelled = _unique_labels([p for p in pts if p.samples_ns])
    if not labelled:
        best = min(pts, key=lambda p: p.latency_ms)
        return f"lowest median: {best.label} (no raw samples stored, so no significance test)", None
    def compare(baseline: str, candidate: str) -> stats.Comparison:
        b, c = labelled[baseline], labelled[candidate]
        assert b.window is not None and c.window is not None
        return window_comparison(b.window, c.window, batch_size=b.batch, devices=(b.device, c.device),
                                 warnings=(b.device_warnings, c.device_warnings), backend=c.backend.split()[0])

    pick = stats.pick_fastest({label: p.samples_ns for label, p in labelled.items()},  # type: ignore[misc]
                              compare=compare)
    if pick.winner is not None:
        if len(labelled) == 1:
            return f"only configuration: {pick.winner}", pick
        c = pick.comparisons[pick.ranking[1]]
        return (f"fastest: {pick.winner} (speedup {c.speedup:.3f} over the runner-up {pick.ranking[1]}, "
                f"95 % CI {c.speedup_low:.3f}-{c.speedup_high:.3f})"), pick
    why = "no significant difference"
    if any(c.host_bound for c in pick.comparisons.values()):
        why = "host-bound: these cells timed the host's kernel launches, not the GPU, so no difference is credited"
    return f"tie: {', '.join(pick.tied)} ({why}; the lowest median is {pick.ranking[0]})", pick


def _best_table(pts: list[Point], batch: int, max_drop: float = 0.01) -> list[str]:
    """Per backend, among the cells within ``max_drop`` of the best unpruned accuracy: the fastest when it
    is significantly faster than the runner-up, else the tie; then the same over all backends."""
    base = {p.backend: p for p in pts if p.pruner == "none"}
    reference = max((p.accuracy for p in base.values() if p.accuracy is not None), default=None)

    def qualifies(p: Point) -> bool:
        return reference is None or (p.accuracy is not None and p.accuracy >= reference - max_drop)

    lines = [(f"Fastest configuration per backend within {max_drop * 100:g} point(s) of the best unpruned accuracy "
              f"(batch {batch}). A configuration is named only when it is significantly faster than the runner-up "
              f"({stats.COMPARISON_TEST}); otherwise the tied set is listed."), "",
             "| backend | verdict | top-1 % | ms [95% CI] | img/s | MB | measurement |",
             "|---|---|---|---|---|---|---|"]
    everyone: list[Point] = []
    for backend in sorted({p.backend for p in pts}):
        if all(p.emulated for p in pts if p.backend == backend):
            lines.append(f"| {backend} | latency is an emulation: not ranked | | | | | |")
            continue
        ok = [p for p in pts if p.backend == backend and qualifies(p) and not p.emulated]
        if not ok:
            lines.append(f"| {backend} | none qualifies | | | | | |")
            continue
        everyone += ok
        verdict, pick = fastest_verdict(ok)
        labelled = _unique_labels([p for p in ok if p.samples_ns])
        best = labelled[pick.ranking[0]] if pick is not None else min(ok, key=lambda p: p.latency_ms)
        size = "-" if best.size_mb is None else f"{best.size_mb:.2f}"
        lines.append(f"| {backend} | {verdict} | {_acc_pct(best)} | {_ci_ms(best)} | {best.throughput:.0f} | "
                     f"{size} | {_stable_mark(best)} |")
    timers = sorted({str(p.timer) for p in everyone})
    for timer in timers:
        # latencies from different timers measure different things: never ranked against each other
        group = [p for p in everyone if str(p.timer) == timer]
        verdict, _ = fastest_verdict(group)
        scope = "all backends" if len(timers) == 1 else f"backends timed with {timer}"
        lines += ["", f"Over {scope} (batch {batch}): {verdict}."]
    return [*lines, ""]


#: The comparisons the report makes when the data has them: (title, baseline, candidate).
STANDARD_COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("EP vs native: ONNX Runtime's TensorRT EP against native TensorRT", "backend=ort-trt", "backend=trt-native"),
    ("INT8 vs FP16", "precision=fp16", "precision=int8"),
    ("INT8 vs FP32", "precision=fp32", "precision=int8"),
    ("FP8 vs INT8", "precision=int8", "precision=fp8"),
)


def recommendation_section(records: Sequence[CellOutcome], definition: str = "compute") -> list[str]:
    """``## Recommendation``: what ``harness recommend`` says per model x dataset (harness.analysis.recommend)."""
    from harness.analysis.recommend_render import recommendation_section as section

    return section(records, definition)


def comparison_section(records: Sequence[CellOutcome], definition: str = "compute") -> list[str]:
    """``## Comparisons``: each standard comparison that has at least one pair, via harness.analysis.compare."""
    from harness.analysis.compare import compare_records, parse_selector
    from harness.analysis.compare_render import to_markdown

    ok = [r for r in records if r.status == "ok" and r.result is not None]
    lines: list[str] = []
    for title, baseline, candidate in STANDARD_COMPARISONS:
        b, c = parse_selector(baseline), parse_selector(candidate)
        if not any(b.matches(r.identity.to_dict()) for r in ok) or not any(c.matches(r.identity.to_dict()) for r in ok):
            continue
        result = compare_records(ok, b, c, definition=definition)
        if not any(r.status in ("paired", "refused") for r in result.rows):
            continue
        body = to_markdown(result).splitlines()[1:]  # drop its own title
        lines += [f"### {title} ({baseline} vs {candidate})", *body]
    if lines:
        lines = ["## Comparisons", "", ("Speedup = baseline / candidate (> 1: the candidate is faster); "
                                        "significant = its 95 % CI excludes 1 and the effect is at least 1 %."),
                 "", *lines]
    return lines


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
