"""The engine inspector is read with an execution context per optimization profile at its opt shape.

Without a context TensorRT shows shape-dependent values as -1 and no format information
(NvInferRuntime.h), so every precision would read "unknown". The fakes below behave that way and
record the order of the calls (no TensorRT here).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from backends.ort_trt import inspect_ep_engines
from backends.trt_inspect import precision_counts, summarize
from backends.trt_loader import INSPECTOR_CACHE_FORMAT, engine_information, inspect_engine
from harness.store.engine_cache import read_verified, write_verified

SAMPLE = json.loads((Path(__file__).resolve().parent / "data" / "trt_samples" / "resnet-a100-qat.graph.json").read_text())


class Context:
    def __init__(self, log: list[tuple], profiles: int) -> None:
        self.log, self.profile, self.shape, self._profiles = log, 0, None, profiles

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.log.append(("set_optimization_profile_async", index, stream))
        self.profile = index
        return 0 <= index < self._profiles

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.log.append(("set_input_shape", name, tuple(shape)))
        self.shape = tuple(shape)
        return name == "input"


class Inspector:
    def __init__(self, log: list[tuple], profiles: int) -> None:
        self.log, self.execution_context, self._profiles = log, None, profiles

    def get_engine_information(self, fmt: str) -> str:
        ctx = self.execution_context
        self.log.append(("get_engine_information", None if ctx is None else (ctx.profile, ctx.shape)))
        layers: list[Any] = []
        for n in range(self._profiles):
            for layer in SAMPLE["Layers"]:
                name = layer["Name"] if n == 0 else f"{layer['Name']} [profile {n}]"
                if ctx is None:
                    layers.append(name)  # no formats without a context
                else:
                    layers.append({**layer, "Name": name})
        return json.dumps({"Layers": layers, "Bindings": SAMPLE["Bindings"]})


class Engine:
    def __init__(self, profiles: int = 1) -> None:
        self.log: list[tuple] = []
        self.num_optimization_profiles = profiles
        self.num_io_tensors = 2

    def create_execution_context(self) -> Context:
        self.log.append(("create_execution_context",))
        return Context(self.log, self.num_optimization_profiles)

    def create_engine_inspector(self) -> Inspector:
        self.log.append(("create_engine_inspector",))
        return Inspector(self.log, self.num_optimization_profiles)

    def get_tensor_name(self, i: int) -> str:
        return ("input", "logits")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "input" else "OUTPUT"


TRT = SimpleNamespace(LayerInformationFormat=SimpleNamespace(JSON="json"))


def test_each_profile_is_read_with_a_context_at_its_opt_shape() -> None:
    engine = Engine(profiles=2)
    texts = engine_information(TRT, engine, [(1, 3, 8, 8), (8, 3, 8, 8)], "input", 77)
    assert engine.log == [
        ("create_execution_context",), ("set_input_shape", "input", (1, 3, 8, 8)),
        ("create_engine_inspector",), ("get_engine_information", (0, (1, 3, 8, 8))),
        ("create_execution_context",), ("set_optimization_profile_async", 1, 77),
        ("set_input_shape", "input", (8, 3, 8, 8)),
        ("create_engine_inspector",), ("get_engine_information", (1, (8, 3, 8, 8))),
    ]
    for n, text in enumerate(texts):
        summary = summarize(text, profile=n)
        assert summary.detailed and precision_counts(summary)["int8"] > 0  # formats were shown
        assert summary.total_layers == len(SAMPLE["Layers"])


def test_the_cache_keeps_one_text_per_profile_and_rereads_an_old_layout(tmp_path: Path) -> None:
    path = tmp_path / "engine.layers.json"
    write_verified(path, json.dumps({"Layers": ["a", "b"]}).encode())  # an old cache, read without a context
    engine = Engine(profiles=1)
    texts = inspect_engine(TRT, engine, path, [(4, 3, 8, 8)], "input", 0)
    assert ("set_input_shape", "input", (4, 3, 8, 8)) in engine.log
    stored = json.loads(read_verified(path).data)
    assert stored["format"] == INSPECTOR_CACHE_FORMAT and stored["profiles"] == texts
    again = Engine(profiles=1)
    assert inspect_engine(TRT, again, path, [(4, 3, 8, 8)], "input", 0) == texts and again.log == []


def test_ep_engines_are_read_with_a_context(tmp_path: Path) -> None:
    engine = Engine(profiles=1)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return engine

    logger = type("ILogger", (), {"__init__": lambda self: None,
                                  "Severity": SimpleNamespace(ERROR=1, WARNING=2, INFO=3)})
    trt = SimpleNamespace(Runtime=Runtime, ILogger=logger, LayerInformationFormat=TRT.LayerInformationFormat,
                          TensorIOMode=SimpleNamespace(INPUT="INPUT"))
    (tmp_path / "a.engine").write_bytes(b"x")
    (out,) = inspect_ep_engines([tmp_path / "a.engine"], "int8", (32, 3, 8, 8), 5, trt=trt)
    assert ("set_input_shape", "input", (32, 3, 8, 8)) in engine.log
    assert out["detailed"] and out["precision_counts_comparable"] and "int8_fallback" not in out


def test_compare_uses_no_precision_counts_of_names_only_engines() -> None:
    from backends.trt_inspect import engine_summary
    from harness.analysis.compare import precision_counts as cell_counts

    names_only = engine_summary(json.dumps({"Layers": [layer["Name"] for layer in SAMPLE["Layers"]]}), "int8")
    detailed = engine_summary(json.dumps(SAMPLE), "int8")

    def cell(**details: Any) -> Any:
        return SimpleNamespace(session={"details": details})

    assert cell_counts(cell(ep_engines=[{"engine": "a", **names_only}])) is None  # ort-trt: names only
    assert cell_counts(cell(ep_engines=[{"engine": "a", **detailed}])) == detailed["precision_counts"]
    assert cell_counts(cell(layers=names_only)) is None
    assert cell_counts(cell(layers=detailed))["int8"] > 0
