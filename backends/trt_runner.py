"""The TensorRT runtime session: it only runs an engine someone else built (Polygraphy's "runner").

* One dedicated CUDA stream; buffers are torch CUDA tensors; ``run`` enqueues and never synchronises.
* One execution context per optimization profile (``profiles: per-batch`` builds one per timed batch
  size), and with ``cuda_graph`` one context per *captured shape*: a graph recorded for one input
  shape depends on the context's state for that shape, so no later ``set_input_shape`` may touch it.
  Batch sizes that are not timed (e.g. the accuracy pass's last batch) run on a spare, never-captured
  context of the profile that holds them.
* Every boolean TensorRT return is checked (:func:`backends.trt_api.checked`); a capture during
  which ``execute_async_v3`` returns False (or CUDA rejects the capture) is ended and discarded, that
  batch size runs without a graph, and ``details["cuda_graph_fallback"]`` says why.
* :meth:`TrtNativeSession.iprofiler_rows` is a separate profiling pass (never the timed run): an
  ``IProfiler`` on its own context, per-layer times joined to the inspector's layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import torch

from backends.base import Session, SessionInfo
from backends.gpu_common import timing_facts, trt_dtype_to_torch
from backends.trt_api import checked
from backends.trt_plan import Profile, profile_index
from harness.errors import HarnessError

# trt-api: ICudaEngine.num_io_tensors, ICudaEngine.get_tensor_name, ICudaEngine.get_tensor_mode
# trt-api: ICudaEngine.get_tensor_dtype, ICudaEngine.create_execution_context
# trt-api: IExecutionContext.set_optimization_profile_async, IExecutionContext.set_input_shape
# trt-api: IExecutionContext.get_tensor_shape, IExecutionContext.set_tensor_address
# trt-api: IExecutionContext.execute_async_v3, IExecutionContext.profiler, IProfiler.report_layer_time


@dataclass(frozen=True)
class IoSpec:
    name: str
    is_input: bool
    dtype: torch.dtype


def engine_io(trt: ModuleType, engine: Any) -> list[IoSpec]:
    """Inputs and outputs of a deserialized engine, with their torch buffer types."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        specs.append(IoSpec(name=name, is_input=is_input, dtype=trt_dtype_to_torch(engine.get_tensor_dtype(name))))
    return specs


def make_layer_profiler(trt: ModuleType) -> Any:
    """A ``trt.IProfiler`` that accumulates ``report_layer_time`` calls per layer name."""

    class LayerProfiler(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(str(layer_name), []).append(float(ms))

    return LayerProfiler()


class _CaptureFailed(Exception):
    pass


@dataclass
class _Context:
    """One execution context with its profile, bound shape and output buffers (and at most one graph)."""

    context: Any
    profile: int
    bound_batch: int | None = None
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    graph: Any = None  # torch.cuda.CUDAGraph
    graph_input: torch.Tensor | None = None


class TrtNativeSession(Session):
    """A deserialized engine on a dedicated CUDA stream (see the module docstring)."""

    #: CUDA graph type and capture context (torch's); a seam so capture failures can be tested without a GPU
    graph_type: ClassVar[Any] = torch.cuda.CUDAGraph
    graph_capture: ClassVar[Any] = staticmethod(torch.cuda.graph)

    def __init__(
        self,
        *,
        trt: ModuleType,
        runtime: Any,
        engine: Any,
        info: SessionInfo,
        input_shape: tuple[int, ...],
        profiles: tuple[Profile, ...],
        batch_sizes: tuple[int, ...],
        cuda_graph: bool,
        layers: Any = None,  # backends.trt_inspect.InspectorSummary, for the profiling pass
        device: torch.device | None = None,  # default: the current CUDA device
        stream: Any = None,  # default: a new torch.cuda.Stream on ``device``
    ) -> None:
        self.info = info
        self.info.details.update(timing_facts())
        self._trt = trt
        self._runtime = runtime  # keep alive: the engine needs its runtime
        self._engine = engine
        self._layers = layers
        io = engine_io(trt, engine)
        ins = [s for s in io if s.is_input]
        outs = [s for s in io if not s.is_input]
        if len(ins) != 1 or len(outs) != 1:
            raise HarnessError(f"engine has inputs {[s.name for s in ins]} and outputs {[s.name for s in outs]}; "
                               "the harness expects one of each")
        self._in, self._out = ins[0], outs[0]
        self._shape = tuple(input_shape)
        self._profiles = tuple(profiles)
        self.min_batch = min(p[0] for p in self._profiles)
        self.max_batch = max(p[2] for p in self._profiles)
        self._device = device if device is not None else torch.device("cuda", torch.cuda.current_device())
        self._stream = stream if stream is not None else torch.cuda.Stream(device=self._device)
        self._cuda_graph = cuda_graph
        self._timed: dict[int, _Context] = {}  # per timed batch size (shared per profile without graphs)
        self._spare: dict[int, _Context] = {}  # per profile index: untimed batch sizes, never captured
        by_profile: dict[int, _Context] = {}
        with torch.cuda.stream(self._stream):
            for b in sorted(set(batch_sizes)):
                index = self._profile_of(b)
                if cuda_graph or index not in by_profile:
                    ctx = self._new_context(index)  # with graphs: one context per captured shape
                    by_profile.setdefault(index, ctx)
                else:
                    ctx = by_profile[index]
                self._timed[b] = ctx
                x = torch.zeros((b, *self._shape), dtype=self._in.dtype, device=self._device)
                self._execute(self._timed[b], x)  # warm call: flushes deferred setup before timing or capture
                if cuda_graph:
                    self._capture(self._timed[b], b, x)
        self._stream.synchronize()
        self.info.details["execution_contexts"] = len({id(c) for c in self._timed.values()})

    # -- contexts

    def _profile_of(self, b: int) -> int:
        return profile_index(self._profiles, b)

    def _new_context(self, index: int) -> _Context:
        context = self._engine.create_execution_context()
        if context is None:
            raise HarnessError("TensorRT could not create an execution context (out of GPU memory?)")
        if index != 0:
            checked(context.set_optimization_profile_async(index, self._stream.cuda_stream),
                    "set_optimization_profile_async", f"profile {index}")
        return _Context(context=context, profile=index)

    def _context_for(self, b: int) -> _Context:
        ctx = self._timed.get(b)
        if ctx is not None:
            return ctx
        index = self._profile_of(b)
        if not self._cuda_graph:
            shared = next((c for c in self._timed.values() if c.profile == index), None)
            if shared is not None:
                return shared
        spare = self._spare.get(index)
        if spare is None:
            spare = self._spare[index] = self._new_context(index)
        return spare

    @property
    def cuda_stream(self) -> torch.cuda.Stream:
        return self._stream

    @property
    def graph_batches(self) -> tuple[int, ...]:
        """Batch sizes that replay a CUDA graph."""
        return tuple(sorted(b for b, c in self._timed.items() if c.graph is not None))

    def _check_batch(self, b: int) -> None:
        if not self.min_batch <= b <= self.max_batch:
            raise HarnessError(
                f"batch size {b} is outside the engine's profile [{self.min_batch}, {self.max_batch}]; "
                "TensorRT engines are never rebuilt during a run: include it in the sweep's batch sizes"
            )

    # -- execution

    def _output_for(self, ctx: _Context, b: int) -> torch.Tensor:
        out = ctx.outputs.get(b)
        if out is None:
            out_shape = tuple(int(d) for d in ctx.context.get_tensor_shape(self._out.name))
            if any(d < 0 for d in out_shape):
                raise HarnessError(f"output shape {out_shape} is unresolved for batch {b}")
            out = torch.empty(out_shape, dtype=self._out.dtype, device=self._device)
            ctx.outputs[b] = out
        return out

    def _execute(self, ctx: _Context, x: torch.Tensor) -> torch.Tensor:
        b = int(x.shape[0])
        if ctx.bound_batch != b:
            checked(ctx.context.set_input_shape(self._in.name, (b, *self._shape)), "set_input_shape",
                    f"{self._in.name} {(b, *self._shape)}")
            ctx.bound_batch = b
        out = self._output_for(ctx, b)
        checked(ctx.context.set_tensor_address(self._out.name, out.data_ptr()), "set_tensor_address", self._out.name)
        checked(ctx.context.set_tensor_address(self._in.name, x.data_ptr()), "set_tensor_address", self._in.name)
        checked(ctx.context.execute_async_v3(self._stream.cuda_stream), "execute_async_v3", f"batch {b}")
        return out

    def _capture(self, ctx: _Context, b: int, x: torch.Tensor) -> None:
        """Record one graph of ``ctx`` at batch ``b`` (addresses already bound by the warm call)."""
        graph = self.graph_type()
        failure: str | None = None
        try:
            with self.graph_capture(graph, stream=self._stream, capture_error_mode="thread_local"):
                if not ctx.context.execute_async_v3(self._stream.cuda_stream):
                    raise _CaptureFailed("execute_async_v3 returned False during CUDA graph capture")
        except _CaptureFailed as exc:
            failure = str(exc)
        except RuntimeError as exc:  # CUDA invalidated the capture
            failure = f"CUDA graph capture failed: {exc}"
        if failure is not None:
            try:
                graph.reset()  # discard: an empty graph would replay the warm-up output
            except RuntimeError:
                pass
            self.info.details.setdefault("cuda_graph_fallback", {})[str(b)] = (
                f"{failure}; batch {b} runs without a CUDA graph"
            )
            return
        ctx.graph, ctx.graph_input = graph, x

    def stage(self, host: torch.Tensor) -> torch.Tensor:
        b = int(host.shape[0])
        self._check_batch(b)
        with torch.cuda.stream(self._stream):
            ctx = self._timed.get(b)
            if ctx is not None and ctx.graph_input is not None:
                ctx.graph_input.copy_(host)
                staged = ctx.graph_input
            else:
                staged = host.to(self._device, dtype=self._in.dtype)
        self._stream.synchronize()
        return staged

    def run(self, staged: torch.Tensor) -> torch.Tensor:
        b = int(staged.shape[0])
        self._check_batch(b)
        ctx = self._context_for(b)
        if ctx.graph is None:
            return self._execute(ctx, staged)
        assert ctx.graph_input is not None
        with torch.cuda.stream(self._stream):
            if staged.data_ptr() != ctx.graph_input.data_ptr():
                ctx.graph_input.copy_(staged, non_blocking=True)
            ctx.graph.replay()
        return ctx.outputs[b]

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        b = int(host.shape[0])
        self._check_batch(b)
        ctx = self._context_for(b)
        with torch.cuda.stream(self._stream):
            if ctx.graph_input is not None and ctx.graph is not None:
                ctx.graph_input.copy_(host, non_blocking=host.is_pinned())
                y = self.run(ctx.graph_input)
            else:
                x = host.to(self._device, dtype=self._in.dtype, non_blocking=host.is_pinned())
                y = self._execute(ctx, x)
            result = y.to("cpu", dtype=torch.float32)
        self._stream.synchronize()
        return result

    # -- the profiling pass

    def layer_profile(self, batch: torch.Tensor) -> dict[str, Any]:
        """The IProfiler pass at ``batch``'s size (on zeros of its shape) in the stored layout."""
        from backends.layer_profile import trt_layer_profile

        size = int(batch.shape[0])
        return trt_layer_profile(self.iprofiler_rows(size), size)

    def iprofiler_rows(self, batch: int, runs: int = 10) -> list[dict[str, Any]]:
        """Per-layer time (ms, mean over ``runs``) at ``batch``, joined to the inspector's layers.

        Runs on a context of its own with an ``IProfiler`` attached, never on the timed contexts;
        call it outside any timing window. Rows: ``{name, ms, precision, type, reformat}``, in the
        order TensorRT reported them.
        """
        from backends.trt_inspect import join_layer_times

        self._check_batch(batch)
        if runs < 1:
            raise HarnessError(f"layer profile needs at least one run, got {runs}")
        ctx = self._new_context(self._profile_of(batch))
        profiler = make_layer_profiler(self._trt)
        ctx.context.profiler = profiler
        x = torch.zeros((batch, *self._shape), dtype=self._in.dtype, device=self._device)
        with torch.cuda.stream(self._stream):
            self._execute(ctx, x)  # warm-up, not reported
            self._stream.synchronize()
            profiler.times.clear()
            for _ in range(runs):
                self._execute(ctx, x)
                self._stream.synchronize()
        del ctx
        return join_layer_times(profiler.times, self._layers)

    def close(self) -> None:
        self._stream.synchronize()
        self._timed.clear()
        self._spare.clear()
        self._engine = None
        self._runtime = None


__all__ = ["IoSpec", "TrtNativeSession", "engine_io", "make_layer_profiler"]
