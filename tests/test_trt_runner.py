"""The TensorRT runtime session without TensorRT or a GPU (the hazards of running engines).

The engine is a fake whose ``execute_async_v3`` really copies ``input[b].flatten()[:10]`` into the
bound output address with ``ctypes.memmove`` (CPU tensors): so binding, contexts and profiles are
checked by the numbers they produce. CUDA graphs are replaced through the session's graph seam by a
graph that replays the call captured into it.
"""

from __future__ import annotations

import contextlib
import ctypes
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from backends.base import SessionInfo
from backends.trt_inspect import summarize
from backends.trt_runner import TrtNativeSession
from harness.errors import HarnessError

SHAPE = (3, 4, 4)
CPU = torch.device("cpu")

# the fake streams and providers here stand in for CUDA: a GPU machine's real CUDA must never meet them
pytestmark = pytest.mark.usefixtures("no_cuda")


class FakeStream:
    cuda_stream = 7

    def synchronize(self) -> None:
        pass


class FakeDtype:
    name = "FLOAT"


class Ctx:
    """An execution context: per-context shape/addresses, like TensorRT's."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.shape, self.addr, self.profile = engine, None, {}, 0
        self.shapes_set: list[tuple[int, ...]] = []
        self.profiler: Any = None
        self.capturing = False

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert stream == FakeStream.cuda_stream
        self.profile = index
        return index < self.engine.num_optimization_profiles

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        self.shapes_set.append(self.shape)
        return self.engine.fail != "set_input_shape"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], 10)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return self.engine.fail != "set_tensor_address"

    def execute_async_v3(self, stream: int) -> bool:
        if self.engine.fail == "execute_async_v3" or (self.capturing and self.engine.fail_capture):
            return False
        self.engine.capture_target = self  # what a fake graph records
        b, c, h, w = self.shape
        for i in range(b):
            ctypes.memmove(self.addr["logits"] + i * 40, self.addr["input"] + i * c * h * w * 4, 40)
        self.engine.executions += 1
        if self.profiler is not None:
            for name in ("conv1", "Reformatting CopyNode for conv1", "fc"):
                self.profiler.report_layer_time(name, 0.5)
        return True


class Engine:
    num_io_tensors = 2

    def __init__(self, profiles: int = 1, fail: str | None = None, fail_capture: bool = False) -> None:
        self.num_optimization_profiles = profiles
        self.fail, self.fail_capture = fail, fail_capture
        self.contexts: list[Ctx] = []
        self.executions = 0
        self.capture_target: Ctx | None = None

    def get_tensor_name(self, i: int) -> str:
        return ["input", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> FakeDtype:
        return FakeDtype()

    def create_execution_context(self) -> Ctx:
        self.contexts.append(Ctx(self))
        return self.contexts[-1]


class FakeIProfiler:
    def __init__(self) -> None:
        pass


TRT = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), IProfiler=FakeIProfiler)


def session_class(engine: Engine) -> type[TrtNativeSession]:
    """A session whose CUDA graphs are fakes: capture marks the context, replay re-runs the captured call."""

    class Graph:
        def __init__(self) -> None:
            self.ctx: Ctx | None = None
            self.was_reset = False

        def replay(self) -> None:
            assert self.ctx is not None
            self.ctx.capturing = False
            assert self.ctx.execute_async_v3(FakeStream.cuda_stream)

        def reset(self) -> None:
            self.was_reset = True

    @contextlib.contextmanager
    def capture(graph: Graph, stream: Any, capture_error_mode: str) -> Any:
        before = engine.contexts[-1]
        before.capturing = True
        try:
            yield
            graph.ctx = engine.capture_target
        finally:
            before.capturing = False

    class Session(TrtNativeSession):
        graph_type = Graph
        graph_capture = staticmethod(capture)

    return Session


def make(engine: Engine, profiles: tuple[tuple[int, int, int], ...], batch_sizes: tuple[int, ...],
         cuda_graph: bool = False, layers: Any = None) -> TrtNativeSession:
    cls = session_class(engine)
    return cls(trt=TRT, runtime=None, engine=engine, info=SessionInfo("trt-native", "fp16", "cuda"),
               input_shape=SHAPE, profiles=profiles, batch_sizes=batch_sizes, cuda_graph=cuda_graph, layers=layers,
               device=CPU, stream=FakeStream())


def expect(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)[:, :10]


PER_BATCH = ((1, 1, 1), (1, 4, 4), (1, 8, 8))


def test_per_batch_profiles_get_one_context_each_and_compute_correctly() -> None:
    engine = Engine(profiles=3)
    session = make(engine, PER_BATCH, (1, 4, 8))
    assert [c.profile for c in engine.contexts] == [0, 1, 2]
    assert session.info.details["execution_contexts"] == 3
    for b in (1, 4, 8, 3):  # 3 is untimed: runs on the profile that holds it (opt 4)
        host = torch.randn((b, *SHAPE))
        assert torch.equal(session.infer(host), expect(host))
        assert torch.equal(session.run(session.stage(host)), expect(host))
    assert len(engine.contexts) == 3
    with pytest.raises(HarnessError, match="outside the engine's profile"):
        session.infer(torch.randn((9, *SHAPE)))


def test_a_shared_profile_uses_one_context_without_graphs() -> None:
    engine = Engine()
    session = make(engine, ((1, 8, 8),), (1, 4, 8))
    assert len(engine.contexts) == 1 and engine.contexts[0].profile == 0
    host = torch.randn((4, *SHAPE))
    assert torch.equal(session.infer(host), expect(host))


@pytest.mark.parametrize("call", ["set_input_shape", "set_tensor_address", "execute_async_v3"])
def test_every_boolean_return_is_checked(call: str) -> None:
    with pytest.raises(HarnessError, match=f"TensorRT {call} returned False"):
        make(Engine(fail=call), ((1, 8, 8),), (1, 8))


def test_a_profile_the_engine_lacks_is_refused() -> None:
    with pytest.raises(HarnessError, match="set_optimization_profile_async returned False"):
        make(Engine(profiles=1), PER_BATCH, (1, 4, 8))


def test_cuda_graphs_use_one_context_per_captured_shape() -> None:
    engine = Engine()
    session = make(engine, ((1, 8, 8),), (1, 4, 8), cuda_graph=True)
    assert session.graph_batches == (1, 4, 8)
    timed = engine.contexts[:3]
    assert [c.shapes_set for c in timed] == [[(1, *SHAPE)], [(4, *SHAPE)], [(8, *SHAPE)]]
    for b in (8, 1, 4, 2):  # 2 is untimed: a spare context, never one with a graph
        host = torch.randn((b, *SHAPE))
        assert torch.equal(session.infer(host), expect(host))
        assert torch.equal(session.run(session.stage(host)), expect(host))
    assert [c.shapes_set for c in timed] == [[(1, *SHAPE)], [(4, *SHAPE)], [(8, *SHAPE)]]  # never re-shaped
    assert len(engine.contexts) == 4 and "cuda_graph_fallback" not in session.info.details


def test_a_failed_capture_falls_back_to_plain_execution_and_says_so() -> None:
    engine = Engine(fail_capture=True)
    session = make(engine, ((1, 8, 8),), (1, 8), cuda_graph=True)
    assert session.graph_batches == ()
    fallback = session.info.details["cuda_graph_fallback"]
    assert set(fallback) == {"1", "8"} and "returned False during CUDA graph capture" in fallback["8"]
    host = torch.randn((8, *SHAPE))
    before = engine.executions
    assert torch.equal(session.run(session.stage(host)), expect(host))  # real logits, not the warm-up output
    assert engine.executions == before + 1


LAYERS_JSON = {
    "Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear Int8"}],
         "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear Half"}]},
        {"Name": "Reformatting CopyNode for conv1", "LayerType": "Reformat",
         "Inputs": [{"Name": "c", "Format/Datatype": "Half"}], "Outputs": [{"Name": "d", "Format/Datatype": "Float"}]},
        {"Name": "fc", "LayerType": "CaskGemm", "Inputs": [{"Name": "d", "Format/Datatype": "Float"}],
         "Outputs": [{"Name": "logits", "Format/Datatype": "Float"}]},
    ],
    "Bindings": ["input", "logits"],
}


def test_layer_profile_is_a_separate_pass_joined_to_the_inspector() -> None:
    engine = Engine()
    session = make(engine, ((1, 8, 8),), (8,), layers=summarize(LAYERS_JSON))
    timed_context = engine.contexts[0]
    rows = session.iprofiler_rows(4, runs=3)
    assert timed_context.profiler is None and len(engine.contexts) == 2  # its own context
    assert [(r["name"], r["precision"], r["reformat"]) for r in rows] == [
        ("conv1", "int8", False), ("Reformatting CopyNode for conv1", "fp32", True), ("fc", "fp32", False)]
    assert all(r["ms"] == pytest.approx(0.5) for r in rows)


def test_trt_native_and_ort_sessions_record_the_same_timing_definition() -> None:
    from backends.ort_cuda import OrtGpuSession

    trt_session = make(Engine(), ((1, 8, 8),), (8,))
    ort_session = OrtGpuSession(object(), SessionInfo("ort-trt", "fp16", "cuda"), device_id=0, stream=FakeStream(),
                                run_options=None, num_outputs=10, device=CPU)
    assert trt_session.info.details["gpu_timing"] == ort_session.info.details["gpu_timing"]
    assert trt_session.info.details["gpu_timing"]["compute_timer"] == "cuda-events-on-session-stream"
    assert isinstance(trt_session.cuda_stream, FakeStream) and isinstance(ort_session.cuda_stream, FakeStream)


def test_cuda_graph_cells_record_that_staged_batches_alias_the_graph_input() -> None:
    session = make(Engine(), ((1, 8, 8),), (1, 4), cuda_graph=True)
    staged = [session.stage(torch.full((4, *SHAPE), float(i))) for i in range(3)]
    assert len({s.data_ptr() for s in staged}) == 1  # the one bound buffer, overwritten by each stage()
    assert torch.equal(session.run(staged[0]), expect(torch.full((4, *SHAPE), 2.0)))  # the last one staged
    facts = session.info.details["cuda_graph_inputs"]
    assert facts["staged_batches"] == 1 and facts["batches"] == [1, 4] and "one bound input buffer" in facts["note"]
    plain = make(Engine(), ((1, 8, 8),), (1, 4))
    assert "cuda_graph_inputs" not in plain.info.details
    kept = [plain.stage(torch.randn((4, *SHAPE))) for _ in range(3)]
    assert len({s.data_ptr() for s in kept}) == 3  # distinct batches
