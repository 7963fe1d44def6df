"""Shared ONNX Runtime pieces: lazy import, session creation, provider checks."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from harness.errors import BackendUnavailable, HarnessError, missing_library
from harness.onnx_export import INPUT_NAME, OUTPUT_NAME

ORT_INSTALL_HINT = (
    "install exactly one of: pip install 'pq-harness[ort-cpu]' (onnxruntime) or "
    "pip install 'pq-harness[ort-gpu]' (onnxruntime-gpu); never both"
)


def import_ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise missing_library("onnxruntime", "ONNX Runtime backends", ORT_INSTALL_HINT) from None
    return onnxruntime


def provider_unavailable_reason(provider: str) -> str | None:
    """None when ``provider`` is listed by the installed ONNX Runtime, else why not."""
    try:
        ort = import_ort()
    except BackendUnavailable as exc:
        return str(exc)
    available = ort.get_available_providers()
    if provider not in available:
        return (f"onnxruntime {ort.__version__} has no {provider} (it has: {', '.join(available)}); "
                "install onnxruntime-gpu matching your CUDA/TensorRT instead of onnxruntime")
    return None


def check_providers(actual: list[str], requested: list[str]) -> None:
    """Fail loudly when ONNX Runtime fell back from the provider that was asked for."""
    primary = requested[0]
    if not actual or actual[0] != primary:
        raise HarnessError(
            f"ONNX Runtime fell back: asked for {requested}, session runs on {actual}; "
            f"{primary} failed to load (see ONNX Runtime's log for the missing library)"
        )
    missing = [p for p in requested if p not in actual]
    if missing:
        raise HarnessError(f"ONNX Runtime dropped providers {missing}: asked for {requested}, got {actual}")


#: ``optimization`` names -> ONNX Runtime's graph optimisation levels.
OPTIMIZATION_LEVELS: dict[str, str] = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def create_session(
    model_path: Path,
    providers: list[tuple[str, dict[str, Any]]],
    *,
    intra_op_threads: int = 0,
    optimization: str = "all",
) -> Any:
    """An InferenceSession on exactly ``providers`` (checked after creation), at graph ``optimization``."""
    ort = import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        raise HarnessError(f"ONNX Runtime could not load {model_path.name}: {exc}") from exc
    check_providers(session.get_providers(), [name for name, _ in providers])
    return session


__all__ = ["INPUT_NAME", "OPTIMIZATION_LEVELS", "OUTPUT_NAME", "check_providers", "create_session", "import_ort",
           "provider_unavailable_reason"]
