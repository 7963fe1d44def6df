"""Backend registry: names are final (torch, ort-cpu, ort-cuda, ort-trt, trt-native).

Backends are imported lazily so that listing them never imports torch, ONNX Runtime or
TensorRT (the names and precisions live in :mod:`backends.names`, which imports nothing heavy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from backends.names import BACKEND_CLASSES, BACKEND_NAMES, PRECISIONS
from harness.errors import BackendUnavailable, HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Backend
    from harness.machine import MachineFacts

__all__ = ["BACKEND_NAMES", "PRECISIONS", "backend_class", "validate_request"]


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    try:
        target = BACKEND_CLASSES[name]
    except KeyError:
        raise HarnessError(
            f"unknown backend '{name}'; choose one of: {', '.join(BACKEND_NAMES)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def validate_request(name: str, precision: str, facts: MachineFacts | None = None) -> type[Backend]:
    """Fail before any work when the backend/precision pair cannot run on a machine with ``facts``
    (probed here when None; pass one probe to check many pairs)."""
    cls = backend_class(name)
    cls.check_precision(precision)
    if facts is None:
        from harness.machine import probe_machine

        facts = probe_machine()
    reason = cls.unavailable_reason(precision, facts)
    if reason is not None:
        raise BackendUnavailable(f"backend '{name}' cannot run here: {reason}")
    return cls

