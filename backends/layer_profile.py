"""Per-layer profiles in the one layout a cell result stores (``layer_profile``), whichever profiler
made them: ONNX Runtime's (:func:`ort_session_profile`) or TensorRT's IProfiler rows
(:func:`trt_layer_profile`). Each session's ``layer_profile`` uses one of these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: How many layers of a profile are stored per cell (largest first); by_op_type is always complete.
PROFILE_TOP_LAYERS = 50


def ort_session_profile(details: Mapping[str, Any], batch: Any) -> dict[str, Any]:
    """ONNX Runtime's profiler over the model an ONNX Runtime session runs (``details``: its
    ``onnx_path``, ``providers`` and ``intra_op_threads``), in a separate profiling session."""
    from backends.ort_profile import profile_onnx

    path = details.get("onnx_path")
    if not path:
        raise ValueError("the session names no ONNX path in its details (onnx_path)")
    providers = list(details.get("providers") or ["CPUExecutionProvider"])
    threads = details.get("intra_op_threads")

    def configure(options: Any) -> None:
        if threads:
            options.intra_op_num_threads = int(threads)

    profile = profile_onnx(Path(path), batch, providers=providers, configure=configure)
    layers = [{"name": n.name, "op_type": n.op_type, "ms": n.mean_ms, "share": n.share, "provider": n.provider}
              for n in profile.nodes[:PROFILE_TOP_LAYERS]]
    merged: dict[str, dict[str, Any]] = {}
    for op in profile.op_types:  # one row per op type (the profile splits them per provider)
        row = merged.setdefault(op.op_type, {"op_type": op.op_type, "ms": 0.0, "share": 0.0, "count": 0})
        row["ms"] += op.mean_ms
        row["share"] += op.share
        row["count"] += op.nodes
    by_op = sorted(merged.values(), key=lambda r: r["ms"], reverse=True)
    return {"source": "onnxruntime-profiler", "batch_size": int(batch.shape[0]), "layers": layers,
            "by_op_type": by_op, "layer_count": len(profile.nodes), "runs": profile.runs,
            "providers": list(profile.providers), "notes": list(profile.notes)}


def trt_layer_profile(rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """TensorRT IProfiler rows (``{name, ms, precision, type, reformat}`` from
    ``TrtNativeSession.iprofiler_rows``) in the stored ``layer_profile`` layout."""
    total = sum(float(r["ms"]) for r in rows) or 0.0

    def share(ms: float) -> float:
        return ms / total if total > 0 else 0.0

    ordered = sorted(rows, key=lambda r: float(r["ms"]), reverse=True)
    layers = [{"name": r["name"], "op_type": r.get("type") or "unknown", "ms": float(r["ms"]),
               "share": share(float(r["ms"])), "precision": r.get("precision"), "reformat": bool(r.get("reformat"))}
              for r in ordered[:PROFILE_TOP_LAYERS]]
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        op = r.get("type") or "unknown"
        row = merged.setdefault(op, {"op_type": op, "ms": 0.0, "share": 0.0, "count": 0})
        row["ms"] += float(r["ms"])
        row["count"] += 1
    for row in merged.values():
        row["share"] = share(row["ms"])
    precisions: dict[str, int] = {}
    for r in rows:
        precisions[str(r.get("precision"))] = precisions.get(str(r.get("precision")), 0) + 1
    return {"source": "tensorrt-iprofiler", "batch_size": batch_size, "layers": layers,
            "by_op_type": sorted(merged.values(), key=lambda r: r["ms"], reverse=True), "layer_count": len(rows),
            "precision_counts": precisions, "reformat_layers": sum(1 for r in rows if r.get("reformat"))}
