"""Shared ONNX Runtime pieces: lazy import, session creation, provider checks, and no silent fallback.

ONNX Runtime's Python session falls back by itself unless told not to: a session whose providers
fail to load is re-created on the fallback providers, and ``InferenceSession.run`` catches an
execution provider's failure (``EPFail``, e.g. a TensorRT out-of-memory), re-creates the session on
CUDA/CPU *without the provider options* (no user stream, no TensorRT) and retries, printing two lines
to stdout. A cell would then time CUDA or the CPU while its record says TensorRT. Every session here
is created with the providers checked afterwards and its run-time fallback disabled, and an EP
failure during a run is one :class:`~harness.errors.HarnessError` line that fails the cell.

What ONNX Runtime logs while a session is built (its warnings go to the process's stderr from C++;
the TensorRT EP's "platform doesn't support fast native int8" among them) is captured, kept with the
session's details, and never printed between the progress bar and the table.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
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
#: ONNX Runtime's session log level: 2 keeps warnings (nodes placed on another provider, TensorRT
#: turning INT8 or FP16 off), which are captured, not printed.
SESSION_LOG_LEVEL = 2
#: At most this many captured log lines are kept with a session.
MAX_LOG_LINES = 200


@contextlib.contextmanager
def captured_native_log(lines: list[str]) -> Iterator[None]:
    """Capture what is written to the process's stderr (file descriptor 2, where ONNX Runtime's and
    TensorRT's C++ loggers write) while the block runs; append its lines to ``lines``. (stdout is
    left alone: the CLI's progress bar draws there from its own thread.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(line for line in text.splitlines() if line.strip())
            del lines[:-MAX_LOG_LINES]


def _session_class(ort: ModuleType) -> type:
    """ONNX Runtime's InferenceSession with its fallback off from the start: a session whose providers
    fail to load is an error here, never a session re-created on the fallback providers (which also
    prints a banner on stdout). ``_create_inference_session`` is where every ONNX Runtime from 1.8 on
    builds the session; were it renamed, the providers are still checked after creation."""

    class NoFallbackSession(ort.InferenceSession):  # type: ignore[misc,name-defined]
        def _create_inference_session(self, *args: Any, **kwargs: Any) -> Any:
            self._enable_fallback = False
            return super()._create_inference_session(*args, **kwargs)

    return NoFallbackSession


def ep_failure(exc: BaseException, providers: Any) -> HarnessError:
    """One line for an execution provider that failed during a run (fallback is disabled)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return HarnessError(f"ONNX Runtime's execution provider failed during a run ({first}) on {providers}; "
                        "fallback to another provider is disabled, so this cell records the failure instead "
                        "of timing another provider")


def ep_failure_type() -> type[BaseException]:
    """ONNX Runtime's ``EPFail`` exception type (what its session raises when a provider fails)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

    return EPFail


def create_session(
    model_path: Path,
    providers: list[tuple[str, dict[str, Any]]],
    *,
    intra_op_threads: int = 0,
    log: list[str] | None = None,
    optimization: str = "all",
) -> Any:
    """An InferenceSession on exactly ``providers`` (checked after creation), with ONNX Runtime's
    run-time fallback disabled, at graph ``optimization``; its log while it is built is appended to ``log``."""
    ort = import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = SESSION_LOG_LEVEL
    lines = log if log is not None else []
    try:
        with captured_native_log(lines):
            session = _session_class(ort)(
                str(model_path),
                sess_options=options,
                providers=[name for name, _ in providers],
                provider_options=[opts for _, opts in providers],
            )
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        raise HarnessError(f"ONNX Runtime could not load {model_path.name}: {exc}".splitlines()[0]) from exc
    session.disable_fallback()
    check_providers(session.get_providers(), [name for name, _ in providers])
    return session


__all__ = ["INPUT_NAME", "MAX_LOG_LINES", "OPTIMIZATION_LEVELS", "OUTPUT_NAME", "SESSION_LOG_LEVEL",
           "captured_native_log", "check_providers", "create_session", "ep_failure", "ep_failure_type", "import_ort",
           "provider_unavailable_reason"]
