"""CUDA graphs for the torch backend (``backend_options.torch.cuda_graphs``).

Eager PyTorch dispatches every operator from Python; at small batches the GPU runs a kernel faster
than the host issues the next one, and the timed interval is the host's (:mod:`harness.measure.launch`).
A CUDA graph captures the call once and replays every kernel with one launch.

What is timed is honest by construction: each staged batch gets its own graph, captured at staging
(outside every timing window) on that batch's own static input, so ``run`` replays exactly the call
on exactly the batch it was staged with; nothing is copied into a shared buffer while timing. The
graphs of one input shape share one memory pool: they run one after another on one stream, and each
keeps its output alive, so their intermediates may share memory but their results never alias.
``infer`` (accuracy and the ``e2e`` definition) copies the host batch into one static input per shape
and replays its graph. When capture fails (a model that synchronises or branches on data), the
session runs eagerly and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: Eager calls on a side stream before capture (cuDNN/cuBLAS workspaces and autotuning happen there,
#: as torch's CUDA graph notes ask).
CAPTURE_WARMUP_CALLS = 3


@dataclass
class CapturedCall:
    """One call captured as a CUDA graph: its static input, the graph, its static output."""

    input: torch.Tensor
    output: torch.Tensor
    graph: Any  # torch.cuda.CUDAGraph

    @property
    def shape(self) -> torch.Size:
        return self.input.shape

    def replay(self) -> torch.Tensor:
        """Launch the graph on the current stream; returns the static output (valid once it has run)."""
        self.graph.replay()
        return self.output


class GraphCapture:
    """Captures ``call`` per staged batch on ``device`` and keeps what it did in ``record`` (stored
    with the session's details)."""

    def __init__(self, call: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
        self._call = call
        self._device = device
        self._pools: dict[tuple[int, ...], Any] = {}
        self._infer: dict[tuple[int, ...], CapturedCall] = {}
        self.failed: str | None = None
        self.record: dict[str, Any] = {
            "enabled": True, "captured": 0,
            "timed": "replay of one CUDA graph per staged batch (captured at staging on that batch)",
        }

    def capture(self, static_input: torch.Tensor) -> CapturedCall | torch.Tensor:
        """The call on ``static_input`` captured as a graph, or ``static_input`` itself (to be run
        eagerly) once a capture has failed."""
        if self.failed is not None:
            return static_input
        try:
            captured = self._capture(static_input)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, and say so
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.record["fallback"] = (f"CUDA graph capture failed ({self.failed}); calls after it run eagerly "
                                       f"({self.record['captured']} graph(s) captured before)")
            self.record["timed"] = "eager calls (capture failed)" if not self.record["captured"] else \
                "mixed: graph replays and eager calls (capture failed part-way)"
            torch.cuda.synchronize(self._device)
            return static_input
        self.record["captured"] += 1
        return captured

    def _capture(self, static_input: torch.Tensor) -> CapturedCall:
        key = tuple(static_input.shape)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = torch.cuda.graph_pool_handle()
        stream = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP_CALLS):
                self._call(static_input)
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = self._call(static_input)
        stream.synchronize()
        return CapturedCall(static_input, output, graph)

    def run_copied(self, x: torch.Tensor) -> torch.Tensor:
        """The call on ``x`` through the graph of its shape (``x`` copied into its static input)."""
        key = tuple(x.shape)
        target = self._infer.get(key)
        if target is None and self.failed is None:
            captured = self.capture(x.clone())
            if isinstance(captured, CapturedCall):
                target = self._infer[key] = captured
        if target is None:
            return self._call(x)
        target.input.copy_(x)
        return target.replay()

    def release(self) -> None:
        """Drop the graphs and their pools (the record stays)."""
        self._infer.clear()
        self._pools.clear()


__all__ = ["CAPTURE_WARMUP_CALLS", "CapturedCall", "GraphCapture"]
