"""Per-node times from ONNX Runtime's profiler, in a separate pass (never the timed run).

ONNX Runtime writes a Chrome-trace JSON list when ``SessionOptions.enable_profiling``
is set and ``end_profiling()`` is called.  Each kernel execution is an event with
``"cat": "Node"``, ``"name": "<node name>_kernel_time"``, ``"dur"`` in microseconds
and ``args.op_name`` / ``args.provider``; each ``run`` is a ``"cat": "Session"``
event named ``model_run``.  :func:`profile_onnx` opens its own profiling session,
runs ``warmup + runs`` inferences on one batch, drops the node events of the warm-up
runs (by the ``model_run`` windows) and aggregates the rest per node and per op type.
Per-node sums exceed the end-to-end time slightly less than on GPU but are still not
a latency: the profiled session is slower than the timed one (profiling overhead).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError, missing_library

_KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeTime:
    """One graph node over the profiled runs."""

    name: str
    op_type: str
    provider: str
    total_ms: float  # over all profiled runs
    mean_ms: float  # per run
    count: int  # kernel executions seen
    share: float  # of the summed node time, 0..1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "provider": self.provider, "total_ms": self.total_ms,
                "mean_ms": self.mean_ms, "count": self.count, "share": self.share}


@dataclass(frozen=True)
class OpTypeTime:
    """All nodes of one op type (per provider) over the profiled runs."""

    op_type: str
    provider: str
    total_ms: float
    mean_ms: float
    count: int
    nodes: int
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "provider": self.provider, "total_ms": self.total_ms,
                "mean_ms": self.mean_ms, "count": self.count, "nodes": self.nodes, "share": self.share}


@dataclass(frozen=True)
class OrtProfile:
    """The per-node view of one ONNX Runtime session on one batch."""

    model: str
    providers: tuple[str, ...]  # what the session really used
    batch_size: int
    runs: int
    warmup: int
    run_ms: tuple[float, ...]  # each profiled run's model_run duration
    nodes: tuple[NodeTime, ...]  # by total time, largest first
    op_types: tuple[OpTypeTime, ...]  # by total time, largest first
    notes: tuple[str, ...] = field(default=())

    @property
    def node_total_ms(self) -> float:
        return float(sum(n.total_ms for n in self.nodes))

    def top_nodes(self, k: int = 10) -> list[NodeTime]:
        return list(self.nodes[:k])

    def top_op_types(self, k: int = 10) -> list[OpTypeTime]:
        return list(self.op_types[:k])

    def op_type_counts(self) -> dict[str, int]:
        """``{op_type: number of distinct nodes}`` (e.g. how many QLinearConv / DequantizeLinear)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return counts

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        nodes = self.nodes if top_k is None else self.nodes[:top_k]
        return {
            "model": self.model,
            "providers": list(self.providers),
            "batch_size": self.batch_size,
            "runs": self.runs,
            "warmup": self.warmup,
            "run_ms": list(self.run_ms),
            "node_total_ms": self.node_total_ms,
            "nodes": [n.to_dict() for n in nodes],
            "op_types": [o.to_dict() for o in self.op_types],
            "notes": list(self.notes),
        }


def _run_windows(events: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in runs)


def aggregate_events(
    events: Iterable[Mapping[str, Any]],
    *,
    skip_runs: int = 0,
) -> tuple[tuple[NodeTime, ...], tuple[OpTypeTime, ...], tuple[float, ...], int]:
    """Per-node and per-op-type totals of a profile's events, without the first ``skip_runs`` runs.

    Returns ``(nodes, op_types, run_ms, runs)``.  Without ``model_run`` events every node
    event counts and ``runs`` is 1.
    """
    events = [e for e in events if isinstance(e, Mapping)]
    windows = _run_windows(events)
    kept = windows[skip_runs:]
    runs = max(1, len(kept)) if windows else 1
    start = kept[0][0] if kept else (float("inf") if windows else float("-inf"))
    per_node: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or "dur" not in event:
            continue
        name = str(event.get("name", ""))
        if not name.endswith(_KERNEL_SUFFIX):  # fence_before / fence_after markers
            continue
        if windows and float(event.get("ts", 0)) < start:
            continue  # a warm-up run
        args = event.get("args", {}) or {}
        node = name[: -len(_KERNEL_SUFFIX)]
        entry = per_node.setdefault(node, {"op_type": str(args.get("op_name", "?")),
                                           "provider": str(args.get("provider", "?")), "us": 0.0, "count": 0})
        entry["us"] += float(event["dur"])
        entry["count"] += 1
    total_us = sum(e["us"] for e in per_node.values()) or 1.0
    nodes = tuple(sorted(
        (NodeTime(name, e["op_type"], e["provider"], e["us"] / 1e3, e["us"] / 1e3 / runs, e["count"],
                  e["us"] / total_us) for name, e in per_node.items()),
        key=lambda n: (-n.total_ms, n.name)))
    grouped: dict[tuple[str, str], list[NodeTime]] = {}
    for node in nodes:
        grouped.setdefault((node.op_type, node.provider), []).append(node)
    op_types = tuple(sorted(
        (OpTypeTime(op, provider, sum(n.total_ms for n in members), sum(n.total_ms for n in members) / runs,
                    sum(n.count for n in members), len(members), sum(n.share for n in members))
         for (op, provider), members in grouped.items()),
        key=lambda o: (-o.total_ms, o.op_type)))
    run_ms = tuple((end - begin) / 1e3 for begin, end in kept)
    return nodes, op_types, run_ms, runs


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_library("onnxruntime", "profiling an ONNX model",
                              "pip install 'pq-harness[ort-cpu]' (onnxruntime)") from None
    return ort


def profile_onnx(
    onnx_path: Path,
    batch: Any,
    *,
    providers: Sequence[str | tuple[str, Mapping[str, Any]]] = ("CPUExecutionProvider",),
    configure: Callable[[Any], None] | None = None,
    runs: int = 5,
    warmup: int = 1,
    input_name: str | None = None,
) -> OrtProfile:
    """Profile ``onnx_path`` on ``batch`` (NCHW float32, array or tensor) in a separate session.

    ``providers`` is what ``InferenceSession`` takes (names or ``(name, options)``);
    ``configure(session_options)`` applies the backend's own settings (threads,
    optimisation level) before profiling is switched on.  A session that did not get the
    first requested provider is refused (ONNX Runtime falls back silently).
    """
    ort = _import_ort()
    if runs < 1 or warmup < 0:
        raise HarnessError(f"profiling needs runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise HarnessError(f"ONNX model {onnx_path} does not exist")
    if hasattr(batch, "detach"):
        batch = batch.detach().cpu().numpy()
    array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
    wanted = [p if isinstance(p, str) else p[0] for p in providers]
    with tempfile.TemporaryDirectory(prefix="ort-profile.") as tmp:
        options = ort.SessionOptions()
        if configure is not None:
            configure(options)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=list(providers))
        except Exception as exc:
            raise HarnessError(f"ONNX Runtime could not open {onnx_path.name} for profiling: "
                               f"{type(exc).__name__}: {exc}") from exc
        used = tuple(session.get_providers())
        if wanted and wanted[0] not in used:
            session.end_profiling()
            raise HarnessError(f"profiling {onnx_path.name}: asked for {wanted[0]}, ONNX Runtime gave "
                               f"{', '.join(used)}")
        name = input_name or session.get_inputs()[0].name
        try:
            for _ in range(warmup + runs):
                session.run(None, {name: array})
        finally:
            trace = Path(session.end_profiling())
        try:
            events = json.loads(trace.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"ONNX Runtime's profile {trace.name} is unreadable: {exc}") from exc
    if isinstance(events, dict):  # some builds wrap the list
        events = events.get("traceEvents", [])
    nodes, op_types, run_ms, counted = aggregate_events(events, skip_runs=warmup)
    notes: list[str] = []
    if not nodes:
        notes.append("the profile holds no node events")
    if run_ms and len(run_ms) != runs:
        notes.append(f"the profile shows {len(run_ms)} measured runs, expected {runs}")
    return OrtProfile(model=onnx_path.name, providers=used, batch_size=int(array.shape[0]), runs=counted,
                      warmup=warmup, run_ms=run_ms, nodes=nodes, op_types=op_types, notes=tuple(notes))


__all__ = ["NodeTime", "OpTypeTime", "OrtProfile", "aggregate_events", "profile_onnx"]
