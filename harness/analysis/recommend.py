"""``harness recommend``: the configuration to ship, from a results database.

For one model x dataset (x weights, dataset size) and one batch size, every cell is checked in this
order, and the first check it fails is its reason in ``excluded``:

1. it finished (``failed``), it has the timing the objective needs (raw samples for latency and
   throughput: no CI and no significance test without them; an energy reading for energy);
2. it has an accuracy and a **baseline** to measure its drop against. The baseline is the uncompressed
   cell of the same *backend family*: the same backend's unpruned fp32 cell (at the same batch size, else
   at any batch size: accuracy does not depend on it); when that backend has no fp32 cell (e.g. a
   TensorRT backend swept at fp16/int8 only), the torch unpruned fp32 cell. Each ONNX Runtime
   execution provider is its own family: they run different kernels, so a provider's own fp32 cell is
   what isolates the loss that compression causes;
3. its drop (baseline top-1 minus its top-1, in points) is within ``max_accuracy_drop``
   (``budget``). The point estimate is used: the evaluation set is fixed, every cell is scored on the
   same images;
4. its measurement is stable (``unstable``; the stored verdict, else computed from the samples);
5. it is **comparable** with the others: latencies are ranked only among cells measured on the same
   host and GPU model with the same timer (and GPU timing definition), as ``harness compare`` refuses
   other pairs. The measurement context with the most cells that passed 1-4 is used; the others are
   ``not comparable``. Sizes are bytes, not measurements: the size objective skips this check.

Among the cells left, the best on the objective is named only when it is significantly better than
the runner-up (:func:`harness.measure.stats.pick_fastest`: the hierarchical bootstrap CI of the speedup plus
the 1 % minimum effect); otherwise the tied set is returned, smallest first. Sizes are exact and
energy is one NVML reading per cell (no CI): for them the minimum effect alone decides (a smaller
difference is a tie). The Pareto front of objective against accuracy over the comparable cells (in
budget or not, each marked) gives the alternatives; ``measured_on`` names the host, device and
libraries of the recommended cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.analysis.pairing import window_comparison
from harness.errors import HarnessError
from harness.measure import stats
from harness.store.outcome import CellOutcome, CellResult, TimingWindow, latency_is_emulated

Objective = Literal["latency", "throughput", "size", "energy"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput", "size", "energy")
#: Smallest relative difference called better, for sizes and energy (the latency comparisons' own
#: minimum effect, :func:`harness.measure.stats.compare_latencies`).
MIN_EFFECT = 0.01
DEFAULT_MAX_DROP_POINTS = 1.0
#: Library versions worth naming with the hardware.
UNITS = {"latency": "ms", "throughput": "img/s", "size": "MB", "energy": "mJ/image"}
_VERSION_KEYS = ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "python")


# --------------------------------------------------------------------------- one cell


def cell_label(outcome: CellOutcome) -> str:
    """The identity's label plus what recovery and an accuracy-aware INT8 budget add to it."""
    ident = outcome.identity.to_dict()
    label = outcome.identity.label
    if ident.get("recover"):
        label += " +recover"
    int8 = ident.get("int8") or {}
    if isinstance(int8, dict) and int8.get("max_accuracy_drop") is not None:
        label += f" int8-budget {int8['max_accuracy_drop']:g}"
    return label


def _timing(result: CellResult, definition: str) -> TimingWindow | None:
    return result.timing(definition)


def _node(result: CellResult) -> dict[str, Any]:
    return result.to_dict().get("node") or {}


def measurement_context(result: CellResult, definition: str) -> dict[str, Any]:
    """What must match for two latencies to be compared: host, GPU model, timer, GPU timing definition."""
    node, timing = _node(result), _timing(result, definition)
    gpu = node.get("gpu_name") or (result.device_name if result.device == "cuda" else None)
    gpu_timing = ((result.session or {}).get("details") or {}).get("gpu_timing")
    if isinstance(gpu_timing, dict):
        gpu_timing = gpu_timing.get("id")
    return {"hostname": node.get("hostname"), "gpu_name": gpu, "timer": None if timing is None else timing.timer,
            "gpu_timing": gpu_timing if result.device == "cuda" else None}


def _context_text(ctx: dict[str, Any]) -> str:
    parts = [f"host {ctx['hostname'] or 'not recorded'}", f"timer {ctx['timer']}"]
    if ctx["gpu_name"]:
        parts.append(f"GPU {ctx['gpu_name']}")
    if ctx["gpu_timing"]:
        parts.append(f"GPU timing {ctx['gpu_timing']}")
    return ", ".join(parts)


@dataclass
class _Cell:
    outcome: CellOutcome
    definition: str
    baseline: CellOutcome | None = None
    ci: stats.MedianCI | None = None
    stability: dict[str, Any] | None = None

    @property
    def result(self) -> CellResult:
        assert self.outcome.result is not None
        return self.outcome.result

    @property
    def key(self) -> str:
        return self.outcome.key

    @property
    def window(self) -> TimingWindow | None:
        return _timing(self.result, self.definition)

    @property
    def samples(self) -> list[list[int]] | None:
        t = self.window
        return None if t is None else (t.samples_ns or None)

    @property
    def host_bound(self) -> str | None:
        """What a host-bound window means and the fix (None: the device set the pace, or not a GPU window)."""
        t = self.window
        check = None if t is None else t.launch_check
        return check.reason(self.outcome.identity.backend) if check is not None and check.host_bound else None

    @property
    def size_bytes(self) -> int | None:
        return self.result.compressed_size_bytes

    @property
    def energy(self) -> float | None:
        t = _timing(self.result, self.definition)
        return None if t is None or t.energy_mj_per_image is None else float(t.energy_mj_per_image)

    @property
    def accuracy(self) -> float | None:
        return self.result.top1

    @property
    def drop_points(self) -> float | None:
        if self.baseline is None or self.accuracy is None or self.baseline.result is None:
            return None
        base = self.baseline.result.top1
        return None if base is None else 100.0 * (float(base) - float(self.accuracy))

    def median_ci(self) -> stats.MedianCI | None:
        if self.ci is None:
            t = _timing(self.result, self.definition)
            if t is not None:
                self.ci = t.uncertainty(self.result.device, self.result.device_warnings).ci
        return self.ci


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Recommendation:
    """What ``harness recommend`` says for one model x dataset x batch size (``to_dict`` is ``--json``)."""

    cells: list[str]
    verdict: Literal["best", "tie", "none"]
    numbers: list[dict[str, Any]]
    why: str
    alternatives: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    budget: dict[str, Any]
    objective: str
    batch_size: int
    definition: str
    group: dict[str, Any]
    measured_on: dict[str, Any]
    test: str = field(default=stats.COMPARISON_TEST)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendation": {"cells": list(self.cells), "verdict": self.verdict, "numbers": self.numbers,
                               "why": self.why},
            "alternatives": self.alternatives,
            "excluded": self.excluded,
            "budget": self.budget,
            "objective": self.objective,
            "batch_size": self.batch_size,
            "timing_definition": self.definition,
            "test": self.test,
            "group": self.group,
            "measured_on": self.measured_on,
        }


# --------------------------------------------------------------------------- choosing


def _group_key(outcome: CellOutcome) -> tuple[str, str, str, str | None]:
    i = outcome.identity
    return (i.model, i.weights, i.dataset, i.dataset_size)


def _group_text(key: tuple[str, str, str, str | None]) -> str:
    model, weights, dataset, size = key
    return f"{model} ({weights}) on {dataset}" + (f" {size}" if size else "")


def _pick_group(records: Sequence[CellOutcome], model: str | None,
                dataset: str | None) -> tuple[tuple[str, str, str, str | None], list[CellOutcome]]:
    chosen = [r for r in records if (model is None or r.identity.model == model)
              and (dataset is None or r.identity.dataset == dataset)]
    if not chosen:
        stored = sorted({f"{r.identity.model} on {r.identity.dataset}" for r in records}) or ["none"]
        raise HarnessError(f"no cell for model {model or 'any'} on dataset {dataset or 'any'}; "
                           f"stored: {', '.join(stored)}")
    groups: dict[tuple[str, str, str, str | None], list[CellOutcome]] = {}
    for r in chosen:
        groups.setdefault(_group_key(r), []).append(r)
    if len(groups) > 1:
        names = "; ".join(_group_text(k) for k in groups)
        raise HarnessError(f"the database holds {len(groups)} model x dataset groups ({names}); "
                           "choose one with --model and --dataset")
    key = next(iter(groups))
    return key, groups[key]


def _pick_batch(cells: Sequence[CellOutcome], objective: str, batch_size: int | None) -> int:
    sizes = sorted({c.identity.batch_size for c in cells})
    if batch_size is not None:
        if batch_size not in sizes:
            raise HarnessError(f"no cell at batch size {batch_size}; stored batch sizes: "
                               f"{', '.join(map(str, sizes))}")
        return batch_size
    # latency: the smallest batch (an online request); the others: the largest (a throughput setting)
    return sizes[0] if objective == "latency" else sizes[-1]


def _baseline_for(cell: CellOutcome, ok: Sequence[CellOutcome], batch: int) -> CellOutcome | None:
    """The family's uncompressed cell: same backend, unpruned fp32 (this batch first), else torch's."""
    def unpruned_fp32(backend: str) -> list[CellOutcome]:
        found = [c for c in ok if c.identity.backend == backend and c.identity.precision == "fp32"
                 and c.identity.pruner == "none" and not c.identity.to_dict().get("recover")
                 and c.result is not None and c.result.top1 is not None]
        return sorted(found, key=lambda c: (c.identity.batch_size != batch, c.identity.batch_size))

    for backend in (cell.identity.backend, "torch"):
        found = unpruned_fp32(backend)
        if found:
            return found[0]
    return None


def _stability(cell: _Cell) -> dict[str, Any] | None:
    """The window's stability verdict: stored, else computed from its samples (TimingWindow.uncertainty)."""
    t = _timing(cell.result, cell.definition)
    if t is None:
        return None
    u = t.uncertainty(cell.result.device, cell.result.device_warnings)
    return None if u.stable is None else {"stable": u.stable, "reasons": list(u.reasons), "source": u.source}


def _exclude(excluded: list[dict[str, Any]], outcome: CellOutcome, reason: str, kind: str) -> None:
    excluded.append({"key": outcome.key, "label": cell_label(outcome), "reason": reason, "kind": kind})


def recommend(
    records: Sequence[CellOutcome],
    *,
    max_accuracy_drop: float = DEFAULT_MAX_DROP_POINTS,
    objective: str = "latency",
    batch_size: int | None = None,
    model: str | None = None,
    dataset: str | None = None,
    definition: str = "compute",
    include_unstable: bool = False,
) -> Recommendation:
    """The configuration to ship (see the module docstring); bad arguments are one-line HarnessErrors."""
    if objective not in OBJECTIVES:
        raise HarnessError(f"unknown objective '{objective}'; choose one of {', '.join(OBJECTIVES)}")
    if definition not in ("compute", "e2e"):
        raise HarnessError(f"unknown timing definition '{definition}'; choose compute or e2e")
    if not max_accuracy_drop >= 0:
        raise HarnessError(f"--max-accuracy-drop must be >= 0 points, got {max_accuracy_drop}")
    if not records:
        raise HarnessError("the results database holds no cells")
    group_key, group = _pick_group(records, model, dataset)
    batch = _pick_batch(group, objective, batch_size)
    ok = [r for r in group if r.status == "ok" and r.result is not None]
    excluded: list[dict[str, Any]] = []
    passed: list[_Cell] = []
    for outcome in (r for r in group if r.identity.batch_size == batch):
        if outcome.status != "ok" or outcome.result is None:
            _exclude(excluded, outcome, f"failed: {outcome.error}", "failed")
            continue
        emulated = latency_is_emulated(outcome.result)
        if emulated:  # an emulation is no configuration to ship, whatever the objective
            _exclude(excluded, outcome, f"emulated: {emulated}", "emulated")
            continue
        cell = _Cell(outcome, definition)
        reason = _measurement_missing(cell, objective)
        if reason:
            _exclude(excluded, outcome, reason, "no measurement")
            continue
        cell.baseline = _baseline_for(outcome, ok, batch)
        if cell.accuracy is None:
            _exclude(excluded, outcome, "no accuracy measured (accuracy off, or no label mapping)", "no accuracy")
            continue
        if cell.baseline is None:
            _exclude(excluded, outcome, f"no uncompressed fp32 cell of {outcome.identity.backend} or torch to "
                                        "measure the accuracy drop against", "no baseline")
            continue
        passed.append(cell)
    comparable, in_budget = _filter(passed, objective, max_accuracy_drop, include_unstable, excluded)
    verdict, chosen, why = _rank(in_budget, objective, passed)
    chosen_cells = [c for c in in_budget if c.key in chosen]
    chosen_cells.sort(key=lambda c: chosen.index(c.key))
    baselines = {c.baseline.key: c.baseline for c in passed if c.baseline is not None}
    return Recommendation(
        cells=list(chosen), verdict=verdict, numbers=[_numbers(c, objective) for c in chosen_cells], why=why,
        alternatives=_alternatives(comparable, chosen, objective, max_accuracy_drop), excluded=excluded,
        budget={"max_accuracy_drop_points": max_accuracy_drop,
                "baselines": [{"key": b.key, "label": cell_label(b), "backend": b.identity.backend,
                               "accuracy": b.result.top1 if b.result else None} for b in baselines.values()],
                "family": "same backend; its unpruned fp32 cell, else torch's"},
        objective=objective, batch_size=batch, definition=definition,
        group=dict(zip(("model", "weights", "dataset", "dataset_size"), group_key)),
        measured_on=_measured_on(chosen_cells or comparable),
    )


def _measurement_missing(cell: _Cell, objective: str) -> str | None:
    if objective == "size":
        return None if cell.size_bytes is not None else "no artifact size recorded"
    timing = _timing(cell.result, cell.definition)
    if timing is None:
        return f"no '{cell.definition}' timing"
    if not cell.samples:
        return "no raw samples (samples_ns): no CI and no significance test"
    if objective == "energy" and cell.energy is None:
        return "no energy reading (CPU cell, or NVML could not read energy)"
    return None


def _filter(passed: list[_Cell], objective: str, max_drop: float, include_unstable: bool,
            excluded: list[dict[str, Any]]) -> tuple[list[_Cell], list[_Cell]]:
    """(comparable cells, comparable cells in budget and stable), excluding the others with a reason."""
    budget_ok: list[_Cell] = []
    for cell in passed:
        drop = cell.drop_points
        assert drop is not None and cell.baseline is not None
        if drop > max_drop + 1e-9:
            _exclude(excluded, cell.outcome, f"outside the accuracy budget: {drop:.2f} points below "
                                             f"{cell_label(cell.baseline)} (budget {max_drop:g})", "budget")
            continue
        if objective != "size":
            cell.stability = _stability(cell)
            if not include_unstable and cell.stability is not None and not cell.stability["stable"]:
                _exclude(excluded, cell.outcome, "unstable: " + "; ".join(cell.stability["reasons"]), "unstable")
                continue
        budget_ok.append(cell)
    if objective == "size":
        return passed, budget_ok
    contexts: dict[str, list[_Cell]] = {}
    for cell in budget_ok or passed:
        contexts.setdefault(_context_text(measurement_context(cell.result, cell.definition)), []).append(cell)
    chosen_ctx = max(sorted(contexts), key=lambda k: len(contexts[k])) if contexts else None
    in_ctx = [c for c in budget_ok if _context_text(measurement_context(c.result, c.definition)) == chosen_ctx]
    for cell in budget_ok:
        if cell not in in_ctx:
            ctx = _context_text(measurement_context(cell.result, cell.definition))
            _exclude(excluded, cell.outcome, f"not comparable: measured with {ctx}; the recommended cells with "
                                             f"{chosen_ctx}", "not comparable")
    comparable = [c for c in passed
                  if _context_text(measurement_context(c.result, c.definition)) == chosen_ctx]
    return comparable, in_ctx


def _rank(cells: list[_Cell], objective: str, passed: list[_Cell]) -> tuple[Literal["best", "tie", "none"],
                                                                            list[str], str]:
    if not cells:
        why = ("no cell qualifies: every cell is excluded (see excluded)" if passed
               else "no cell with the measurements this objective needs")
        return "none", [], why
    labels = {c.key: cell_label(c.outcome) for c in cells}
    by_key = {c.key: c for c in cells}
    if objective in ("latency", "throughput"):
        pick = stats.pick_fastest({c.key: c.samples for c in cells},  # type: ignore[misc]
                                  compare=lambda b, c: _comparison(by_key[b], by_key[c]))
        if len(cells) == 1:
            return "best", [cells[0].key], f"{labels[cells[0].key]} is the only cell that qualifies"
        if pick.winner is not None:
            runner = pick.ranking[1]
            comp = pick.comparisons[runner]
            return "best", [pick.winner], (
                f"{labels[pick.winner]} is significantly faster than the runner-up {labels[runner]}: speedup "
                f"{comp.speedup:.3f} (95 % CI {comp.speedup_low:.3f}-{comp.speedup_high:.3f}; {comp.test})"
                + _host_bound_note([by_key[pick.winner], by_key[runner]]))
        tied = sorted(pick.tied, key=lambda k: (by_key[k].size_bytes or 0, pick.medians_ms[k]))
        return "tie", tied, (f"no significant winner: {labels[pick.ranking[0]]} has the lowest median but is not "
                             f"significantly faster than {', '.join(labels[k] for k in pick.tied[1:])} "
                             f"({stats.COMPARISON_TEST}); tied set listed smallest first"
                             + _host_bound_note([by_key[k] for k in pick.tied]))
    value = {c.key: float(c.size_bytes if objective == "size" else c.energy) for c in cells}  # type: ignore[arg-type]
    ranking = sorted(value, key=lambda k: (value[k], by_key[k].size_bytes or 0))
    best = ranking[0]
    what = "smaller" if objective == "size" else "lower in energy per image"
    note = "" if objective == "size" else (" (each cell's own joules over the images its timed repeats ran, from "
                                           "NVML's energy counter: no CI)")
    if len(ranking) == 1:
        return "best", [best], f"{labels[best]} is the only cell that qualifies{note}"
    tied = [k for k in ranking if value[k] <= value[best] * (1 + MIN_EFFECT)]
    if len(tied) == 1:
        runner = ranking[1]
        return "best", [best], (f"{labels[best]} is {what} than the runner-up {labels[runner]} by "
                                f"{100 * (value[runner] / value[best] - 1):.1f} % (minimum effect "
                                f"{100 * MIN_EFFECT:g} %){note}")
    tied.sort(key=lambda k: (by_key[k].size_bytes or 0, value[k]))
    return "tie", tied, (f"no cell is {what} than {', '.join(labels[k] for k in tied[1:])} by the "
                         f"{100 * MIN_EFFECT:g} % minimum effect{note}; tied set listed smallest first")


def _objective_value(cell: _Cell, objective: str) -> float | None:
    if objective == "size":
        return None if cell.size_bytes is None else cell.size_bytes / 1e6
    if objective == "energy":
        return cell.energy
    ci = cell.median_ci()
    if ci is None:
        return None
    return ci.median_ms if objective == "latency" else ci.throughput_ips


def _numbers(cell: _Cell, objective: str) -> dict[str, Any]:
    from harness.measure.proportions import wilson_interval

    ident = cell.outcome.identity
    ci = cell.median_ci()
    samples = (cell.result.accuracy or {}).get("samples")
    acc = cell.accuracy
    out: dict[str, Any] = {
        "key": cell.key, "label": cell_label(cell.outcome), "identity": ident.to_dict(),
        "accuracy": acc,
        "accuracy_ci": list(wilson_interval(acc, int(samples))) if acc is not None and samples else None,
        "accuracy_samples": samples,
        "accuracy_drop_points": cell.drop_points,
        "baseline": None if cell.baseline is None else cell.baseline.key,
        "median_ms": None if ci is None else ci.median_ms,
        "median_ci_ms": None if ci is None else [ci.low_ms, ci.high_ms],
        "throughput_ips": None if ci is None else ci.throughput_ips,
        "throughput_ci_ips": None if ci is None else [ci.throughput_low_ips, ci.throughput_high_ips],
        "size_mb": None if cell.size_bytes is None else cell.size_bytes / 1e6,
        "energy_mj_per_image": cell.energy,
        "stable": None if cell.stability is None else cell.stability["stable"],
        "host_bound": cell.host_bound,
        "objective_value": _objective_value(cell, objective),
    }
    out.update(_speedup_vs_baseline(cell))
    return out


def _speedup_vs_baseline(cell: _Cell) -> dict[str, Any]:
    """Speedup over the family baseline at the same batch size, when both are comparable."""
    base = cell.baseline
    empty = {"speedup_vs_baseline": None, "speedup_vs_baseline_ci": None, "speedup_significant": None}
    if (base is None or base.result is None or base.key == cell.key
            or base.identity.batch_size != cell.outcome.identity.batch_size or not cell.samples):
        return empty
    base_cell = _Cell(base, cell.definition)
    if not base_cell.samples or (measurement_context(base.result, cell.definition)
                                 != measurement_context(cell.result, cell.definition)):
        return empty
    comp = _comparison(base_cell, cell)
    return {"speedup_vs_baseline": comp.speedup, "speedup_vs_baseline_ci": [comp.speedup_low, comp.speedup_high],
            "speedup_significant": comp.significant}


def _comparison(baseline: _Cell, candidate: _Cell) -> stats.Comparison:
    """Two cells as every reader compares them (harness.analysis.pairing: paired rounds when interleaved,
    disturbed windows refused, host-bound pairs never credited)."""
    assert baseline.window is not None and candidate.window is not None
    b, c = baseline.result, candidate.result
    return window_comparison(baseline.window, candidate.window, batch_size=candidate.outcome.identity.batch_size,
                             devices=(b.device, c.device), warnings=(b.device_warnings, c.device_warnings),
                             backend=candidate.outcome.identity.backend)


def _host_bound_note(cells: Sequence[_Cell]) -> str:
    """What the verdict means when its cells are host-bound (empty when none is)."""
    bound = [cell_label(c.outcome) for c in cells if c.host_bound]
    if not bound:
        return ""
    first = next(c.host_bound for c in cells if c.host_bound)
    return (f"; {', '.join(bound)} {'is' if len(bound) == 1 else 'are'} host-bound "
            f"({first.split(': ', 1)[1] if ': ' in first else first})")


def _alternatives(cells: list[_Cell], chosen: list[str], objective: str, max_drop: float) -> list[dict[str, Any]]:
    """The Pareto front of objective against accuracy (no other cell at least as good on both and better on
    one), less the recommended cells; in budget or not, each marked."""
    higher_better = objective == "throughput"
    points = [(c, _objective_value(c, objective)) for c in cells if c.accuracy is not None]
    points = [(c, v) for c, v in points if v is not None]

    def cost(v: float) -> float:
        return -v if higher_better else v

    front = []
    for c, v in points:
        dominated = any(cost(w) <= cost(v) and (d.accuracy or 0) >= (c.accuracy or 0)
                        and (cost(w) < cost(v) or (d.accuracy or 0) > (c.accuracy or 0))
                        for d, w in points if d is not c)
        if not dominated:
            front.append((c, v))
    front.sort(key=lambda cv: cost(cv[1]))
    out = []
    for c, v in front:
        if c.key in chosen:
            continue
        drop = c.drop_points
        out.append({"key": c.key, "label": cell_label(c.outcome), "accuracy": c.accuracy,
                    "accuracy_drop_points": drop, "objective_value": v,
                    "within_budget": drop is not None and drop <= max_drop + 1e-9,
                    "stable": None if c.stability is None else c.stability["stable"]})
    return out


def _measured_on(cells: list[_Cell]) -> dict[str, Any]:
    """Host, device and libraries of the given cells (the recommended ones, else every comparable one)."""
    nodes = {tuple(sorted(_node(c.result).items())) for c in cells}
    devices = sorted({f"{c.result.device} ({c.result.device_name})" for c in cells})
    versions: dict[str, set[str]] = {}
    for c in cells:
        for k in _VERSION_KEYS:
            if k in c.result.versions:
                versions.setdefault(k, set()).add(str(c.result.versions[k]))
    commits = sorted({str(c.result.harness_commit) for c in cells if c.result.harness_commit})
    return {"nodes": [dict(n) for n in sorted(nodes)], "devices": devices,
            "versions": {k: sorted(v) for k, v in versions.items()}, "harness_commits": commits}


__all__ = [
    "DEFAULT_MAX_DROP_POINTS",
    "MIN_EFFECT",
    "OBJECTIVES",
    "Recommendation",
    "cell_label",
    "measurement_context",
    "recommend",
]
