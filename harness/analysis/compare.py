"""Side-by-side comparison of stored cells: ``harness compare``.

A comparison names a *baseline* and a *candidate* selector (``KEY=VALUE`` pairs over the cell
identity, e.g. ``backend=ort-trt`` against ``backend=trt-native``, or ``precision=fp16`` against
``precision=int8``). Every baseline cell is paired with the candidate cell(s) identical in every
identity field the selectors do not name (model, weights, dataset, dataset size, pruning, precision,
batch size, calibration, ...). The INT8 calibration settings are compared only when both cells have
them (an fp32 cell has none, so ``precision=fp32`` vs ``precision=int8`` pairs across it), and naming
``pruner`` also frees ``amount`` and ``prune_options`` (``pruner=none`` vs ``pruner=l1-global`` pairs
the unpruned cell with every amount).

For each pair: both medians with bootstrap CIs, the speedup with its CI and whether it is significant
(:func:`harness.measure.stats.compare_latencies`: a hierarchical bootstrap over the raw samples of each
repeat; the test is named in every row), throughput, artifact size, build and calibration time,
accuracy of both and the agreement of their top-1 predictions, TensorRT layer precision and reformat
counts, the layers of an INT8 engine that did not run in INT8, the top layers and op types by time.

Pairs whose timers or GPU timing definitions differ are *refused* (listed with the reason, no speedup),
and so are pairs measured on different GPU models unless ``allow_mixed_gpus``. Cells without a partner
are listed, never dropped. Everything is computed from what the database holds: keys that newer
sweeps store (``ci``, ``stability``, ``layer_profile``, ``predictions``, ``calibration``, ``node``) are
used when present; older databases still compare (CIs and stability are computed from ``samples_ns``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from harness.analysis.pairing import window_comparison
from harness.compression.registry import is_zero_fill
from harness.errors import HarnessError
from harness.measure import stats
from harness.store.outcome import (
    CellOutcome,
    CellResult,
    TimingWindow,
    Uncertainty,
    encode_predictions,  # noqa: F401 - re-exported for callers of compare
    latency_is_emulated,
)
from harness.store.outcome import decode_predictions as outcome_decode_predictions

Definition = Literal["compute", "e2e"]
RowStatus = Literal["paired", "refused", "unpaired-baseline", "unpaired-candidate", "failed"]

#: Identity fields a selector may name (``prune_options.x`` / ``calibration.x`` name nested values).
SELECTOR_KEYS: tuple[str, ...] = (
    "model", "weights", "dataset", "dataset_size", "pruner", "amount", "backend", "precision", "batch_size",
    "prune_options", "calibration", "recover", "int8",
)
TOP_N = 5


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Selector:
    """``KEY=VALUE[,KEY=VALUE]`` over the cell identity."""

    text: str
    terms: tuple[tuple[str, str], ...]

    @property
    def fields(self) -> set[str]:
        """Top-level identity fields named (``calibration.method`` names ``calibration``)."""
        return {key.split(".", 1)[0] for key, _ in self.terms}

    def matches(self, identity: dict[str, Any]) -> bool:
        return all(_value_matches(_lookup(identity, key), value) for key, value in self.terms)


def parse_selector(text: str, what: str = "selector") -> Selector:
    """Parse ``backend=torch,precision=fp32``; a bad term is a one-line HarnessError."""
    terms: list[tuple[str, str]] = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise HarnessError(f"{what} '{text}': '{part}' is not KEY=VALUE")
        if key.split(".", 1)[0] not in SELECTOR_KEYS:
            raise HarnessError(f"{what} '{text}': unknown key '{key}'; allowed: {', '.join(SELECTOR_KEYS)}")
        terms.append((key, value))
    if not terms:
        raise HarnessError(f"{what} is empty; give KEY=VALUE[,KEY=VALUE], e.g. backend=torch")
    return Selector(text=text, terms=tuple(terms))


#: Identity fields a cell leaves out when they hold their default (so older cells keep their keys).
IDENTITY_DEFAULTS: dict[str, str] = {"calibration.tool": "harness"}


def _lookup(identity: dict[str, Any], key: str) -> Any:
    value: Any = identity
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        parent, value = value, value.get(part)
    if value is None and key in IDENTITY_DEFAULTS and isinstance(parent, dict):
        return IDENTITY_DEFAULTS[key]  # the field's parent exists (e.g. a calibrated cell) without it
    return value


def _value_matches(actual: Any, wanted: str) -> bool:
    if actual is None:
        return wanted.lower() in ("none", "null", "-", "")
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    if isinstance(actual, (int, float)):
        try:
            return float(actual) == float(wanted)
        except ValueError:
            return False
    return str(actual) == wanted


def _same_except(a: dict[str, Any], b: dict[str, Any], named: set[str]) -> bool:
    """Identical in every field not named; calibration only compared when both cells have one."""
    for key in set(a) | set(b):
        if key in named:
            continue
        if key in ("calibration", "int8") and (a.get(key) is None or b.get(key) is None):
            continue
        if a.get(key) != b.get(key):
            return False
    return True


# --------------------------------------------------------------------------- predictions


def decode_predictions(payload: dict[str, Any] | None) -> np.ndarray | None:
    """The top-1 indices of a stored ``predictions`` value, or None when the cell stored none."""
    return outcome_decode_predictions(payload) if payload else None


def agreement(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """Share of evaluation images on which both cells predict the same top-1 class, or (None, why)."""
    if not a or not b:
        return None, "no stored predictions (the database predates them or accuracy was off)"
    pa, pb = decode_predictions(a), decode_predictions(b)
    assert pa is not None and pb is not None
    if len(pa) != len(pb):
        return None, f"predictions cover different image counts ({len(pa)} vs {len(pb)})"
    if len(pa) == 0:
        return None, "no predictions stored"
    return float(np.mean(pa == pb)), None


# --------------------------------------------------------------------------- one side


def _extra(result: CellResult, key: str) -> Any:
    """A stored key whether this version's CellResult has a field for it or keeps it in ``extra``."""
    return result.to_dict().get(key)


def _details(result: CellResult) -> dict[str, Any]:
    return (result.session or {}).get("details") or {}


def _gpu_name(result: CellResult) -> str | None:
    node = _extra(result, "node") or {}
    if node.get("gpu_name"):
        return str(node["gpu_name"])
    return result.device_name if result.device == "cuda" else None


def precision_counts(result: CellResult) -> dict[str, int] | None:
    """TensorRT layer counts (int8/fp16/fp32/other/reformat/total) of a cell's engine(s), or None.

    None for engines read with layer names only (ONNX Runtime's TensorRT EP builds without detailed
    profiling verbosity): their layers have no precision, so there is nothing to compare."""
    details = _details(result)
    layers = details.get("layers")
    if isinstance(layers, dict) and isinstance(layers.get("precision_counts"), dict):
        if layers.get("detailed") is False:
            return None
        return dict(layers["precision_counts"])
    engines = details.get("ep_engines")
    if isinstance(engines, list):
        total: dict[str, int] = {}
        for engine in engines:
            if not isinstance(engine, dict) or engine.get("detailed") is False:
                return None  # names only: no layer precision to count
            counts = engine.get("precision_counts")
            for k, v in (counts or {}).items():
                total[k] = total.get(k, 0) + int(v)
        return total or None
    return None


def _layer_rows(profile: dict[str, Any] | None) -> list[dict[str, Any]]:
    return sorted((profile or {}).get("layers") or [], key=lambda r: -float(r.get("ms") or 0.0))


def not_int8_layers(profile: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Layers of a TensorRT profile that did not compute in INT8 (reformats included, named as such)."""
    if not profile or profile.get("source") != "tensorrt-iprofiler":
        return []
    return [{"name": r.get("name"), "precision": r.get("precision"), "ms": r.get("ms")}
            for r in _layer_rows(profile) if str(r.get("precision") or "").lower() != "int8"]


def int8_precision_summary(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The nodes an int8 accuracy budget kept in FP32 (with why) and the most harmful nodes by sensitivity."""
    kept: list[dict[str, Any]] = []
    harmful: list[dict[str, Any]] = []
    for analysis in (stored or {}).values():
        kept += list((analysis.get("mixed_precision") or {}).get("excluded") or [])
        harmful += [{k: r.get(k) for k in ("node", "op_type", "harm_points", "snr_db")}
                    for r in ((analysis.get("sensitivity") or {}).get("rows") or [])[:3]]
    return {"fp32_nodes": kept, "sensitivity_top": harmful}


@dataclass
class Side:
    """What one cell contributes to a comparison row."""

    outcome: CellOutcome
    definition: str

    @property
    def result(self) -> CellResult:
        assert self.outcome.result is not None
        return self.outcome.result

    @property
    def timing(self) -> TimingWindow | None:
        return self.result.timing(self.definition)

    @property
    def samples(self) -> list[list[int]] | None:
        t = self.timing
        return None if t is None or not t.samples_ns else t.samples_ns

    def uncertainty(self, ci: stats.MedianCI | None = None) -> Uncertainty | None:
        t = self.timing
        return None if t is None else t.uncertainty(self.result.device, self.result.device_warnings, ci=ci)

    def stability(self, ci: stats.MedianCI | None) -> dict[str, Any] | None:
        u = self.uncertainty(ci)
        if u is None or u.stable is None:
            return None
        return {"stable": u.stable, "reasons": list(u.reasons), "source": u.source}

    def summary(self, ci: stats.MedianCI | None) -> dict[str, Any]:
        res, ident = self.result, self.outcome.identity
        timing = self.timing
        phases = res.prep_phases_s or {}
        profile = _extra(res, "layer_profile")
        counts = precision_counts(res)
        out: dict[str, Any] = {
            "key": self.outcome.key,
            "label": ident.label,
            "identity": ident.to_dict(),
            "device": res.device,
            "device_name": res.device_name,
            "gpu_name": _gpu_name(res),
            "timer": None if timing is None else timing.timer,
            "median_ms": ci.median_ms if ci else (None if timing is None else timing.median_ms),
            "median_ci_ms": [ci.low_ms, ci.high_ms] if ci else None,
            "ci_method": ci.method if ci else None,
            "throughput_ips": ci.throughput_ips if ci else (None if timing is None else timing.throughput_ips),
            "throughput_ci_ips": [ci.throughput_low_ips, ci.throughput_high_ips] if ci else None,
            "stability": self.stability(ci),
            "launch": None if timing is None else timing.launch,
            "host_bound": None if timing is None or not timing.host_bound else (
                timing.launch_check.reason(ident.backend) if timing.launch_check else None),
            "size_mb": None if res.compressed_size_bytes is None else res.compressed_size_bytes / 1e6,
            "build_s": phases.get("build"),
            "calibrate_s": phases.get("calibrate"),
            "export_s": phases.get("export"),
            "accuracy": res.top1,
            "accuracy_samples": (res.accuracy or {}).get("samples"),
            "precision_counts": counts,
            "reformat_count": None if counts is None else counts.get("reformat"),
            "int8_fallback": bool(_details(res).get("int8_fallback")),
            "calibration": _extra(res, "calibration") or ident.calibration,
            "layer_profile_source": (profile or {}).get("source"),
            "top_layers": [{k: r.get(k) for k in ("name", "op_type", "ms", "share", "precision", "provider")
                            if k in r} for r in _layer_rows(profile)[:TOP_N]],
            "top_op_types": [dict(r) for r in ((profile or {}).get("by_op_type") or [])[:TOP_N]],
            **int8_precision_summary(_extra(res, "int8_precision")),
            "recovery": (res.pruning or {}).get("recovery"),
        }
        return out


def _ci(side: Side) -> stats.MedianCI | None:
    u = side.uncertainty()
    return None if u is None else u.ci


# --------------------------------------------------------------------------- rows


@dataclass
class ComparisonRow:
    status: RowStatus
    identity: dict[str, Any]  # the fields both cells share (the baseline's, less the named fields)
    baseline: dict[str, Any] | None
    candidate: dict[str, Any] | None
    definition: str
    comparison: stats.Comparison | None = None
    agreement: float | None = None
    notes: list[str] = field(default_factory=list)
    refused: str | None = None
    not_int8_layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        b, c, comp = self.baseline or {}, self.candidate or {}, self.comparison
        out: dict[str, Any] = {
            "status": self.status,
            "identity": self.identity,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "definition": self.definition,
            "median_ms": [b.get("median_ms"), c.get("median_ms")],
            "median_ci_ms": [b.get("median_ci_ms"), c.get("median_ci_ms")],
            "throughput_ips": [b.get("throughput_ips"), c.get("throughput_ips")],
            "speedup": None, "speedup_ci": None, "significant": None, "faster": None,
            "test": stats.COMPARISON_TEST, "statistic": None, "verdict": self.refused,
            "mann_whitney_p": None,
            "accuracy": [b.get("accuracy"), c.get("accuracy")],
            "accuracy_delta": (c["accuracy"] - b["accuracy"]
                               if b.get("accuracy") is not None and c.get("accuracy") is not None else None),
            "agreement": self.agreement,
            "size_mb": [b.get("size_mb"), c.get("size_mb")],
            "not_int8_layers": self.not_int8_layers,
            "refused": self.refused,
            "notes": self.notes,
            "design": None, "not_comparable": None, "host_bound": None,
        }
        if comp is not None:
            out.update(speedup=comp.speedup, speedup_ci=[comp.speedup_low, comp.speedup_high],
                       significant=comp.significant, faster=comp.faster, test=comp.test,
                       statistic=comp.statistic, verdict=comp.reason, mann_whitney_p=comp.mann_whitney_p,
                       design=comp.design, not_comparable=comp.not_comparable, host_bound=comp.host_bound)
        return out


@dataclass
class CompareResult:
    baseline: Selector
    candidate: Selector
    definition: str
    rows: list[ComparisonRow]

    @property
    def pairs(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.status == "paired"]

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]


def _timing_mismatch(b: Side, c: Side) -> str | None:
    tb, tc = b.timing, c.timing
    if tb is None or tc is None:
        missing = "baseline" if tb is None else "candidate"
        return f"the {missing} cell has no '{b.definition}' timing"
    if not b.samples or not c.samples:
        missing = "baseline" if not b.samples else "candidate"
        return f"the {missing} cell stores no raw samples (samples_ns), so no CI or significance can be computed"
    if tb.timer != tc.timer:
        return f"timers differ ({tb.timer} vs {tc.timer}): the latencies measure different things"
    gb, gc = _details(b.result).get("gpu_timing"), _details(c.result).get("gpu_timing")
    if (gb or gc) and b.result.device == c.result.device == "cuda":
        idb = (gb or {}).get("id") if isinstance(gb, dict) else gb
        idc = (gc or {}).get("id") if isinstance(gc, dict) else gc
        if idb != idc:
            return f"GPU timing definitions differ ({idb or 'not recorded'} vs {idc or 'not recorded'})"
    return None


def _emulated(b: Side, c: Side) -> str | None:
    for name, side in (("baseline", b), ("candidate", c)):
        why = latency_is_emulated(side.result)
        if why:
            return f"latency not compared: the {name} cell's {why.split(':')[0]}"
    return None


def _gpu_mismatch(b: Side, c: Side) -> str | None:
    gb, gc = _gpu_name(b.result), _gpu_name(c.result)
    if gb and gc and gb != gc:
        return f"measured on different GPU models ({gb} vs {gc}); pass --allow-mixed-gpus to compare anyway"
    return None


def _pair_row(b: Side, c: Side, named: set[str], allow_mixed_gpus: bool) -> ComparisonRow:
    shared = {k: v for k, v in b.outcome.identity.to_dict().items() if k not in named}
    if b.outcome.identity.calibration is None or c.outcome.identity.calibration is None:
        shared.pop("calibration", None)
    notes: list[str] = []
    refused = _timing_mismatch(b, c) or _emulated(b, c)
    gpu = _gpu_mismatch(b, c)
    if refused is None and gpu is not None:
        if allow_mixed_gpus:
            notes.append(gpu.split(";")[0] + " (allowed by --allow-mixed-gpus)")
        else:
            refused = gpu
    comparison = None
    if refused is None:
        assert b.samples is not None and c.samples is not None
        comparison = _compare(b, c)
        b_ci, c_ci = comparison.baseline, comparison.candidate
    else:
        b_ci, c_ci = _ci(b), _ci(c)
    bs, cs = b.summary(b_ci), c.summary(c_ci)
    if comparison is not None:
        notes.append(comparison.design_note)
    for name, side in (("baseline", bs), ("candidate", cs)):
        st = side["stability"]
        if st is not None and not st["stable"]:
            notes.append(f"{name} unstable: {'; '.join(st['reasons'])}")
        if side["int8_fallback"]:
            notes.append(f"{name} is an int8 engine without INT8 layers (TensorRT fell back)")
        if side["host_bound"]:
            notes.append(f"{name} {side['host_bound']}")
    nb, nc = (b.result.to_dict().get("node") or {}), (c.result.to_dict().get("node") or {})
    if nb.get("hostname") and nc.get("hostname") and nb["hostname"] != nc["hostname"]:
        notes.append(f"measured on different hosts ({nb['hostname']} vs {nc['hostname']})")
    zero_fill = [s.outcome.identity.pruner for s in (b, c) if is_zero_fill(s.outcome.identity.pruner)]
    if zero_fill and named & {"pruner", "amount"}:
        note = (f"{zero_fill[0]} is zero-fill pruning: tensor shapes stay dense, so the same dense kernels run "
                "and it is not expected to be faster")
        if comparison is not None and comparison.significant:
            note += "; a significant difference here points at drift between the two measurements, not the pruning"
        notes.append(note)
    agree, why = agreement(_extra(b.result, "predictions"), _extra(c.result, "predictions"))
    if why:
        notes.append(f"agreement: {why}")
    not_int8: list[dict[str, Any]] = []
    precisions = {b.outcome.identity.precision, c.outcome.identity.precision}
    if "int8" in precisions and len(precisions) == 2:
        int8_side = c if c.outcome.identity.precision == "int8" else b
        not_int8 = not_int8_layers(_extra(int8_side.result, "layer_profile"))
    return ComparisonRow(status="refused" if refused else "paired", identity=shared, baseline=bs, candidate=cs,
                         definition=b.definition, comparison=comparison, agreement=agree, notes=notes,
                         refused=refused, not_int8_layers=not_int8)


def _compare(b: Side, c: Side) -> stats.Comparison:
    """The pair as :func:`harness.analysis.pairing.window_comparison` compares it (design, refusal, host-bound)."""
    assert b.timing is not None and c.timing is not None
    return window_comparison(b.timing, c.timing, batch_size=b.outcome.identity.batch_size,
                             devices=(b.result.device, c.result.device),
                             warnings=(b.result.device_warnings, c.result.device_warnings),
                             backend=c.outcome.identity.backend)


def _named(baseline: Selector, candidate: Selector) -> set[str]:
    """The fields that may differ within a pair: those the selectors name; naming ``pruner`` also frees
    ``amount`` and ``prune_options`` (they belong to the method: unpruned has amount 0)."""
    named = baseline.fields | candidate.fields
    if "pruner" in named:
        named |= {"amount", "prune_options", "recover"}  # recovery belongs to the pruned step too
    return named


def _describe(records: Iterable[CellOutcome], key: str) -> str:
    values = sorted({str(_lookup(r.identity.to_dict(), key)) for r in records})
    return ", ".join(values) or "none"


def compare_records(
    records: Sequence[CellOutcome],
    baseline: Selector,
    candidate: Selector,
    *,
    definition: str = "compute",
    allow_mixed_gpus: bool = False,
) -> CompareResult:
    """Pair the baseline cells with their candidates (see the module docstring)."""
    if definition not in ("compute", "e2e"):
        raise HarnessError(f"unknown timing definition '{definition}'; choose compute or e2e")
    for name, sel in (("baseline", baseline), ("candidate", candidate)):
        if not any(sel.matches(r.identity.to_dict()) for r in records):
            key = sel.terms[0][0]
            raise HarnessError(f"{name} selector '{sel.text}' matches no cell ({key} values stored: "
                               f"{_describe(records, key)})")
    named = _named(baseline, candidate)
    base_cells = [r for r in records if baseline.matches(r.identity.to_dict())]
    cand_cells = [r for r in records if candidate.matches(r.identity.to_dict())]
    rows: list[ComparisonRow] = []
    used: set[str] = set()
    for b in base_cells:
        if b.status != "ok" or b.result is None:
            rows.append(_failed_row(b, "baseline", named, definition))
            continue
        partners = [c for c in cand_cells if c.key != b.key and c.status == "ok" and c.result is not None
                    and _same_except(b.identity.to_dict(), c.identity.to_dict(), named)]
        if not partners:
            rows.append(ComparisonRow(
                status="unpaired-baseline", identity=b.identity.to_dict(),
                baseline=Side(b, definition).summary(_ci(Side(b, definition))), candidate=None,
                definition=definition, notes=["no candidate cell identical in the fields the selectors do not name"]))
            continue
        for c in partners:
            used.add(c.key)
            rows.append(_pair_row(Side(b, definition), Side(c, definition), named, allow_mixed_gpus))
    base_keys = {b.key for b in base_cells}
    for c in cand_cells:
        if c.key in used or c.key in base_keys:
            continue
        if c.status != "ok" or c.result is None:
            rows.append(_failed_row(c, "candidate", named, definition))
            continue
        rows.append(ComparisonRow(
            status="unpaired-candidate", identity=c.identity.to_dict(), baseline=None,
            candidate=Side(c, definition).summary(_ci(Side(c, definition))), definition=definition,
            notes=["no baseline cell identical in the fields the selectors do not name"]))
    return CompareResult(baseline=baseline, candidate=candidate, definition=definition, rows=rows)


def _failed_row(record: CellOutcome, role: str, named: set[str], definition: str) -> ComparisonRow:
    side = {"key": record.key, "label": record.identity.label, "identity": record.identity.to_dict(),
            "error": record.error}
    return ComparisonRow(status="failed", identity=record.identity.to_dict(),
                         baseline=side if role == "baseline" else None,
                         candidate=side if role == "candidate" else None, definition=definition,
                         notes=[f"{role} cell failed: {record.error}"])


def compare_store(store: Any, baseline: str, candidate: str, *, definition: str = "compute",
                  allow_mixed_gpus: bool = False) -> CompareResult:
    """:func:`compare_records` over a :class:`harness.store.results.ResultStore`, with selector strings."""
    records = list(store.records())
    if not records:
        raise HarnessError(f"the results database {store.path} holds no cells")
    return compare_records(records, parse_selector(baseline, "--baseline"), parse_selector(candidate, "--candidate"),
                           definition=definition, allow_mixed_gpus=allow_mixed_gpus)


__all__ = [
    "SELECTOR_KEYS",
    "CompareResult",
    "ComparisonRow",
    "Selector",
    "agreement",
    "compare_records",
    "compare_store",
    "decode_predictions",
    "encode_predictions",
    "int8_precision_summary",
    "not_int8_layers",
    "parse_selector",
    "precision_counts",
]
