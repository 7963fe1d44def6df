"""ort-cuda / ort-trt on the CPU: provider option dicts, model choice helpers, messages without a GPU."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import backends
from backends.gpu_common import detect_tensorrt_version, fp16_onnx, fp16_onnx_path
from backends.ort_cuda import OrtCudaBackend, OrtGpuSession, ort_bool, ort_cuda_provider_options
from backends.ort_trt import (
    OrtTensorrtBackend,
    engine_files,
    engine_key_options,
    ort_trt_provider_options,
    profile_shapes,
)
from backends.trt_plan import BuildPlan, plan_build
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination
from harness.store.engine_cache import EngineCacheKey, TimingCacheKey

SHAPE = (3, 224, 224)
TRT_VERSIONS = ("10.4.0", "10.15.1.29", "11.4.0.106")

#: The TensorRT EP options of the ONNX Runtime documentation, plus the device and stream keys both GPU providers take.
TRT_EP_KEYS = {
    "trt_fp16_enable", "trt_int8_enable", "trt_int8_calibration_table_name", "trt_int8_use_native_calibration_table",
    "trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable", "trt_timing_cache_path",
    "trt_max_workspace_size", "trt_builder_optimization_level", "trt_sparsity_enable", "trt_profile_min_shapes",
    "trt_profile_opt_shapes", "trt_profile_max_shapes", "trt_detailed_build_log",
    "device_id", "user_compute_stream",
}
BOOL_KEYS = {
    "trt_fp16_enable", "trt_int8_enable", "trt_int8_use_native_calibration_table", "trt_engine_cache_enable",
    "trt_timing_cache_enable", "trt_sparsity_enable", "trt_detailed_build_log",
}

# the fake streams and providers here stand in for CUDA: a GPU machine's real CUDA must never meet them
pytestmark = pytest.mark.usefixtures("no_cuda")


def _options(plan: BuildPlan, tmp: Path, **kw: Any) -> dict[str, str]:
    table = "calibration.flatbuffers" if plan.use_calibrator else None
    return ort_trt_provider_options(plan, engine_dir=tmp / "engines", timing_dir=tmp / "timing", input_shape=SHAPE,
                                    calibration_table_name=kw.pop("table", table), **kw)


PLANS = []
for _v, _p, _m, _s in itertools.product(TRT_VERSIONS, ("fp32", "fp16", "int8"), ("auto", "implicit", "explicit"),
                                        (False, True)):
    try:
        PLANS.append(plan_build(_p, _v, _m, True, _s, (1, 8, 64)))
    except UnsupportedCombination:
        pass


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p.trt_version}-{p.precision}-{p.onnx_source}-{p.sparse}")
def test_trt_ep_options_follow_the_plan(plan: BuildPlan, tmp_path: Path) -> None:
    opts = _options(plan, tmp_path)
    assert set(opts) <= TRT_EP_KEYS
    assert all(isinstance(v, str) for v in opts.values())
    for key in BOOL_KEYS & set(opts):
        assert opts[key] in ("True", "False"), key  # ORT's Python parser accepts only these spellings
    assert opts["trt_fp16_enable"] == ort_bool("FP16" in plan.flags)
    assert opts["trt_int8_enable"] == ort_bool("INT8" in plan.flags)
    assert opts["trt_sparsity_enable"] == ort_bool(plan.sparse)
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str((tmp_path / "engines").resolve())
    assert opts["trt_timing_cache_path"] == str((tmp_path / "timing").resolve())
    assert opts["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert opts["trt_profile_opt_shapes"] == "input:64x3x224x224"
    assert opts["trt_profile_max_shapes"] == "input:64x3x224x224"
    assert opts["trt_max_workspace_size"] == str(4096 << 20)
    assert opts["trt_builder_optimization_level"] == "3"
    assert opts["trt_detailed_build_log"] == "False"
    if plan.use_calibrator:
        assert opts["trt_int8_calibration_table_name"] == "calibration.flatbuffers"
        assert opts["trt_int8_use_native_calibration_table"] == "False"
    else:
        assert "trt_int8_calibration_table_name" not in opts
        assert "trt_int8_use_native_calibration_table" not in opts
    if plan.precision == "int8" and not plan.strongly_typed:
        assert opts["trt_int8_enable"] == opts["trt_fp16_enable"] == "True"  # INT8 with FP16, like --best
    if plan.strongly_typed:
        assert opts["trt_fp16_enable"] == opts["trt_int8_enable"] == "False"
        assert not plan.use_calibrator


def test_int8_paths_per_trt_version(tmp_path: Path) -> None:
    implicit10 = _options(plan_build("int8", "10.4.0", "auto", True, batch_sizes=(8,)), tmp_path)
    assert implicit10["trt_int8_calibration_table_name"] == "calibration.flatbuffers"
    qdq10 = _options(plan_build("int8", "10.4.0", "explicit", True, batch_sizes=(8,)), tmp_path)
    assert "trt_int8_calibration_table_name" not in qdq10 and qdq10["trt_int8_enable"] == "True"
    qdq11 = _options(plan_build("int8", "11.4.0.106", "auto", True, batch_sizes=(8,)), tmp_path)
    assert "trt_int8_calibration_table_name" not in qdq11
    with pytest.raises(UnsupportedCombination):
        plan_build("int8", "11.4.0.106", "implicit", True, batch_sizes=(8,))


def test_never_a_table_for_a_qdq_model(tmp_path: Path) -> None:
    qdq = plan_build("int8", "10.15.1.29", "explicit", True, batch_sizes=(8,))
    with pytest.raises(HarnessError, match="never get a table for a Q/DQ model"):
        _options(qdq, tmp_path, table="calibration.flatbuffers")
    with pytest.raises(HarnessError):
        _options(plan_build("fp16", "10.15.1.29", batch_sizes=(8,)), tmp_path, table="calibration.flatbuffers")


def test_implicit_needs_a_bare_table_name(tmp_path: Path) -> None:
    implicit = plan_build("int8", "10.4.0", "implicit", True, batch_sizes=(8,))
    with pytest.raises(HarnessError, match="calibration table"):
        _options(implicit, tmp_path, table=None)
    with pytest.raises(HarnessError, match="bare file name"):
        _options(implicit, tmp_path, table=str(tmp_path / "calibration.flatbuffers"))


def test_bf16_is_not_offered_by_ort_trt(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedCombination, match="bf16"):
        _options(plan_build("bf16", "10.15.1.29", batch_sizes=(8,)), tmp_path)
    assert "bf16" not in OrtTensorrtBackend.precisions


def test_trt_ep_option_values(tmp_path: Path) -> None:
    plan = plan_build("fp16", "10.15.1.29", sparse=True, batch_sizes=(32, 128))
    opts = _options(plan, tmp_path, workspace_bytes=1 << 30, opt_level=5, detailed_build_log=True, device_id=1,
                    stream_handle=1234567)
    assert opts["trt_max_workspace_size"] == str(1 << 30) and opts["trt_builder_optimization_level"] == "5"
    assert opts["trt_detailed_build_log"] == "True" and opts["trt_sparsity_enable"] == "True"
    assert opts["device_id"] == "1"
    assert "has_user_compute_stream" not in opts and opts["user_compute_stream"] == "1234567"
    assert opts["trt_profile_min_shapes"] == "input:32x3x224x224"
    assert opts["trt_profile_max_shapes"] == "input:128x3x224x224"
    with pytest.raises(HarnessError, match="0-5"):
        _options(plan, tmp_path, opt_level=6)


def test_profile_shape_syntax() -> None:
    assert profile_shapes("input", 1, (3, 224, 224)) == "input:1x3x224x224"
    assert profile_shapes("x", 128, (3, 299, 299)) == "x:128x3x299x299"


def test_engine_cache_dirs_are_per_key(tmp_path: Path) -> None:
    base = EngineCacheKey("ort-trt", "a" * 64, "int8", "implicit", "c" * 16, "10.4.0", "Tesla V100-SXM2-16GB", (7, 0),
                          {"onnxruntime": "1.20.1", "profile": [1, 64, 64]})
    other_calib = dataclasses.replace(base, calibration_hash="d" * 16)
    other_ort = dataclasses.replace(base, builder_options={"onnxruntime": "1.20.0", "profile": [1, 64, 64]})
    root = tmp_path / "ort-trt"
    dirs = {k.path(root, "") for k in (base, other_calib, other_ort)}
    assert len(dirs) == 3 and all(d.parent == root for d in dirs)
    plan = plan_build("int8", "10.4.0", "auto", True, batch_sizes=(1, 64))
    opts = ort_trt_provider_options(plan, engine_dir=base.path(root, ""), timing_dir=root / "timing",
                                    input_shape=SHAPE, calibration_table_name="calibration.flatbuffers")
    assert opts["trt_engine_cache_path"].endswith(base.stem())
    timing = TimingCacheKey("10.4.0", "Tesla V100-SXM2-16GB", (7, 0)).path(root / "timing", "")
    assert timing.parent == root / "timing" and timing.name.startswith("timing-")


def test_engine_files(tmp_path: Path) -> None:
    assert engine_files(tmp_path) == []
    (tmp_path / "TensorrtExecutionProvider_TRTKernel_graph_main_123_0_0_sm80.engine").write_bytes(b"x" * 10)
    (tmp_path / "TensorrtExecutionProvider_TRTKernel_graph_main_123_0_0_sm80.profile").write_bytes(b"p")
    (tmp_path / "calibration.flatbuffers").write_bytes(b"t")
    assert [p.suffix for p in engine_files(tmp_path)] == [".engine"]


# ------------------------------------------------------------------------------ CUDA EP


def test_cuda_ep_options() -> None:
    opts = ort_cuda_provider_options()
    assert opts == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "True",
                    "arena_extend_strategy": "kSameAsRequested"}
    with_stream = ort_cuda_provider_options(device_id=2, stream_handle=140000000000, gpu_mem_limit=8 << 30,
                                            cudnn_conv_algo_search="HEURISTIC", arena_extend_strategy="kNextPowerOfTwo")
    assert with_stream["has_user_compute_stream"] == "True"
    assert with_stream["user_compute_stream"] == "140000000000"
    assert with_stream["gpu_mem_limit"] == str(8 << 30) and with_stream["device_id"] == "2"
    assert all(isinstance(v, str) for v in with_stream.values())
    with pytest.raises(HarnessError):
        ort_cuda_provider_options(cudnn_conv_algo_search="FAST")
    with pytest.raises(HarnessError):
        ort_cuda_provider_options(arena_extend_strategy="grow")


class FakeStream:
    cuda_stream = 140000000000

    def synchronize(self) -> None:
        pass


class FakeOrtSession:
    def __init__(self) -> None:
        self.runs: list[tuple[Any, dict[str, np.ndarray]]] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs.append((names, feeds))
        x = feeds["input"]
        return [np.full((x.shape[0], 10), 0.5, dtype=np.float16)]


def test_infer_is_host_in_host_out_float32() -> None:
    from backends.base import SessionInfo

    fake = FakeOrtSession()
    session = OrtGpuSession(fake, SessionInfo("ort-trt", "fp16", "cuda"), device_id=0, stream=FakeStream(),
                            run_options=None, num_outputs=10, profile=(4, 16), device=torch.device("cpu"))
    out = session.infer(torch.zeros((8, *SHAPE)))
    assert out.dtype == torch.float32 and out.shape == (8, 10) and out.device.type == "cpu"
    (names, feeds), = fake.runs
    assert names == ["logits"] and feeds["input"].dtype == np.float32
    assert isinstance(session.cuda_stream, FakeStream)
    with pytest.raises(HarnessError, match="outside the TensorRT profile"):
        session.infer(torch.zeros((32, *SHAPE)))
    with pytest.raises(HarnessError, match="outside the TensorRT profile"):
        session.infer(torch.zeros((2, *SHAPE)))


# ------------------------------------------------------------------------------ model forms


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fp16_conversion_keeps_float_io_and_is_cached(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto

    from harness.store.fingerprint import file_hash

    src = _tiny_onnx(tmp_path / "tiny.onnx")
    dst = fp16_onnx(src)
    assert dst == fp16_onnx_path(src, file_hash(src)) and dst.parent == src.parent and dst.exists()
    model = onnx.load(str(dst))
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    mtime = dst.stat().st_mtime_ns
    assert fp16_onnx(src) == dst and dst.stat().st_mtime_ns == mtime  # reused, not rebuilt
    _tiny_onnx(src)  # rewritten with the same content: same key, same file
    assert fp16_onnx(src) == dst
    other = tmp_path / "other.onnx"
    _tiny_onnx(other)
    assert fp16_onnx(other).name.startswith("other.fp16-")


def test_fp16_model_computes_the_same_logits(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    src = _tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    try:
        half = ort.InferenceSession(str(fp16_onnx(src)), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - an ORT build without fp16 CPU kernels
        pytest.skip(f"this onnxruntime cannot run fp16 on the CPU: {exc}")
    out = half.run(None, {"input": x})[0]
    assert out.dtype == np.float32 and np.allclose(out, ref, atol=1e-2, rtol=1e-2)


def test_onnx_choice_is_one_function_and_passes_the_sessions_phases(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from backends.base import PhaseTimes
    from backends.trt_plan import onnx_for_plan

    class Source:
        def __init__(self) -> None:
            self.asked: list[tuple[str, PhaseTimes]] = []

        def qdq_onnx(self, target: str, phases: PhaseTimes) -> Path:
            self.asked.append((target, phases))
            phases.add("calibrate", 1.5)
            return tmp_path / f"qdq-{target}.onnx"

    fp32 = _tiny_onnx(tmp_path / "m.onnx")
    source = Source()
    artifact = SimpleNamespace(calibration=source, onnx=lambda: fp32)
    phases = PhaseTimes()
    qdq = plan_build("int8", "10.15.1", "explicit", True, batch_sizes=(1, 8))
    assert onnx_for_plan(qdq, artifact, None, phases) == tmp_path / "qdq-tensorrt.onnx"
    assert source.asked == [("tensorrt", phases)] and phases.seconds == {"calibrate": 1.5}
    assert onnx_for_plan(plan_build("fp32", "10.15.1"), artifact, None, phases) == fp32
    fp16 = plan_build("fp16", "11.4.0")  # strongly typed: the FP16 model is converted here, no option needed
    record: dict[str, object] = {}
    converted = onnx_for_plan(fp16, artifact, None, phases, cache_dir=tmp_path / "cache", record=record)
    assert converted.parent == tmp_path / "cache" / "typed-onnx" and converted.is_file()
    assert record["typed_onnx"]["dtype"] == "fp16" and "convert" in phases.seconds  # type: ignore[index]
    assert onnx_for_plan(fp16, artifact, "convert", phases, cache_dir=tmp_path / "cache") == converted
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(converted.read_bytes())
    assert onnx_for_plan(fp16, artifact, str(mine), phases, record=record) == mine  # a user's own FP16 model
    assert record["typed_onnx"]["provenance"] == "user-supplied"  # type: ignore[index]
    with pytest.raises(HarnessError, match="fp16_onnx"):
        onnx_for_plan(fp16, artifact, str(tmp_path / "missing.onnx"), phases)
    with pytest.raises(HarnessError, match="cache directory"):
        onnx_for_plan(fp16, artifact, None, phases)
    with pytest.raises(HarnessError, match="calibration"):
        onnx_for_plan(qdq, SimpleNamespace(calibration=None, onnx=lambda: fp32), None, phases)


def test_tensorrt_version_falls_back_to_the_pairing_table() -> None:
    pytest.importorskip("harness.gpu.capabilities")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    found = detect_tensorrt_version("1.20.1")
    if found is not None and found.source.endswith("distribution"):
        pytest.skip("a TensorRT wheel is installed here")
    assert found is not None and found.version == "10.4" and "pairing" in found.source
    assert detect_tensorrt_version("1.17.0") is None
    assert detect_tensorrt_version(None) is None


# ------------------------------------------------------------------------------ on this GPU-less machine

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without a GPU")


def _facts(**kw: Any) -> Any:
    from harness.machine import MachineFacts

    base = dict(torch_version="2.5", torch_cuda_available=True, onnxruntime_version="1.20.1",
                ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                tensorrt_version="10.4.0", libnvinfer="libnvinfer.so.10", gpu_visible=True, gpu_cc=(8, 0),
                gpu_name="NVIDIA A100")
    base.update(kw)
    return MachineFacts(**base)


def test_availability_rules_are_pure_functions_of_the_facts() -> None:
    for p in ("fp32", "fp16", "int8"):
        assert OrtCudaBackend.unavailable_reason(p, _facts()) is None
    for p in ("tf32", "fp16", "int8"):
        assert OrtTensorrtBackend.unavailable_reason(p, _facts()) is None
    cpu_ort = _facts(ort_providers=("CPUExecutionProvider",))
    assert "no CUDAExecutionProvider" in OrtCudaBackend.unavailable_reason("fp32", cpu_ort)
    assert "no TensorrtExecutionProvider" in OrtTensorrtBackend.unavailable_reason("fp32", cpu_ort)
    no_gpu = _facts(gpu_visible=False, torch_cuda_available=False, torch_cuda_note="no driver")
    for cls in (OrtCudaBackend, OrtTensorrtBackend):
        reason = cls.unavailable_reason("fp32", no_gpu)
        assert reason is not None and "no NVIDIA GPU" in reason and "\n" not in reason
        assert "supports" in cls.unavailable_reason("bf16", _facts())
    assert "libnvinfer.so.10" in OrtTensorrtBackend.unavailable_reason("fp16", _facts(libnvinfer=None))
    assert OrtCudaBackend.unavailable_reason("fp16", _facts(libnvinfer=None)) is None
    mismatch = _facts(onnxruntime_version="1.20.1", tensorrt_version="11.4.0")
    assert OrtTensorrtBackend.unavailable_reason("tf32", mismatch) is not None
    assert OrtTensorrtBackend.unavailable_reason("tf32", _facts(onnxruntime_version=None)) is not None


def test_ort_trt_offers_what_it_computes_fp32_below_ampere_and_tf32_from_ampere_on() -> None:
    # the TensorRT EP cannot clear TensorRT's TF32 flag: its "fp32" is TF32 on sm_80+
    reason = OrtTensorrtBackend.unavailable_reason("fp32", _facts())
    assert reason is not None and "\n" not in reason
    assert "TF32" in reason and "8.0" in reason and "use precision tf32" in reason
    volta = _facts(gpu_cc=(7, 0), gpu_name="Tesla V100-SXM2-16GB")
    assert OrtTensorrtBackend.unavailable_reason("fp32", volta) is None
    assert "8.0" in OrtTensorrtBackend.unavailable_reason("tf32", volta)


def test_precision_declarations() -> None:
    assert OrtCudaBackend.precisions == ("fp32", "tf32", "fp16", "int8") and OrtCudaBackend.devices == frozenset({"cuda"})
    assert OrtTensorrtBackend.precisions == ("fp32", "tf32", "fp16", "int8")
    assert OrtTensorrtBackend.devices == frozenset({"cuda"})
    with pytest.raises(UnsupportedCombination):
        backends.validate_request("ort-cuda", "bf16")


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt", "trt-native"])
def test_unknown_backend_options_are_refused_before_any_work(name: str, tmp_path: Path) -> None:
    from backends.base import ModelArtifact

    def never() -> Path:
        raise AssertionError("no export for a refused request")

    cls = backends.backend_class(name)
    artifact = ModelArtifact(name="m", module=torch.nn.Identity(), input_shape=SHAPE, num_outputs=10,
                             content_hash="0" * 64, onnx=never)
    with pytest.raises(HarnessError, match="unknown option 'workspace_gb'") as info:
        cls({"workspace_gb": 4}).activate(artifact, "fp32", (1,), tmp_path)
    assert not isinstance(info.value, BackendUnavailable)
    assert str(info.value).startswith(f"backend_options.{name}: ")
    assert "\n" not in str(info.value) and set(cls.Options.model_fields) == set(
        str(info.value).split("allowed: ")[1].split(", "))
    with pytest.raises(HarnessError, match=f"backend_options.{name}.device_id|backend_options.{name}.workspace_mib"):
        cls({"device_id": -1} if name != "trt-native" else {"workspace_mib": 0})
    assert cls(cls.Options()).options == cls.Options()


# ------------------------------------------------------------------------------ calibration tables, one stream


class TableSource:
    """A calibration source that writes an ORT table and may offer trt-native's calibrator cache."""

    provenance_hash = "c" * 64

    def __init__(self, tmp: Path, native: bool) -> None:
        self.tmp, self.native, self.table_builds, self.core_calls = tmp, native, 0, []

    def ort_trt_table(self, cache_dir: Path, phases: Any) -> Path:
        cache_dir.mkdir(parents=True, exist_ok=True)
        table = cache_dir / "calibration.flatbuffers"
        if not table.exists():
            self.table_builds += 1
            table.write_bytes(b"ORT-TABLE")
        return table

    def trt_calibrator_core(self, batch_size: int, input_shape: tuple[int, ...], *, cache_dir: Path,
                            buffer_factory: Any, tensorrt_version: str, phases: Any) -> Any:
        from types import SimpleNamespace

        self.core_calls.append((batch_size, cache_dir, tensorrt_version))
        path = cache_dir / "trt-calib-x.cache"
        if self.native:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"TRT-NATIVE-CACHE")
        return SimpleNamespace(has_valid_cache=self.native, cache_path=path)


def test_one_ort_table_per_model_and_calibration_shared_by_every_engine_dir(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from backends.base import PhaseTimes

    model = _tiny_onnx(tmp_path / "m.onnx")
    source = TableSource(tmp_path, native=False)
    artifact = SimpleNamespace(calibration=source, input_shape=SHAPE)
    backend = OrtTensorrtBackend()
    names = []
    for _ in ("engine-a", "engine-b"):  # e.g. two batch-size sets or workspaces: two engine directories
        table = backend._calibration_table(artifact, model, "10.4.0", tmp_path / "cache", PhaseTimes())
        assert not table.native and table.used["kind"] == "onnxruntime" and table.source.read_bytes() == b"ORT-TABLE"
        names.append(table.name)
    assert source.table_builds == 1 and names == ["calibration.flatbuffers"] * 2


def test_native_calibration_table_is_offered_to_the_ep(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from backends.base import PhaseTimes
    from backends.ort_trt import NATIVE_TABLE_NAME

    model = _tiny_onnx(tmp_path / "m.onnx")
    engine_dir = tmp_path / "cache" / "ort-trt" / "k"
    engine_dir.mkdir(parents=True)
    backend = OrtTensorrtBackend({"native_calibration_table": True, "calibration_batch_size": 16})
    source = TableSource(tmp_path, native=True)
    artifact = SimpleNamespace(calibration=source, input_shape=SHAPE)
    table = backend._calibration_table(artifact, model, "10.4.0", tmp_path / "cache", PhaseTimes())
    name = table.name
    assert table.native and name == NATIVE_TABLE_NAME and table.used["kind"] == "tensorrt-native"
    assert table.source.read_bytes() == b"TRT-NATIVE-CACHE"
    assert source.core_calls == [(16, tmp_path / "cache" / "trt-native" / "calib", "10.4.0")]  # trt-native's key
    plan = plan_build("int8", "10.4.0", "implicit", True, batch_sizes=(1, 8))
    options = ort_trt_provider_options(plan, engine_dir=engine_dir, timing_dir=tmp_path, input_shape=SHAPE,
                                       calibration_table_name=name, native_calibration_table=True,
                                       stream_handle=140000000000)
    assert options["trt_int8_use_native_calibration_table"] == "True"
    assert options["trt_int8_calibration_table_name"] == NATIVE_TABLE_NAME
    assert "has_user_compute_stream" not in options and options["user_compute_stream"] == "140000000000"

    missing = TableSource(tmp_path, native=False)  # no trt-native run yet: ORT's table, and it says so
    fallback = backend._calibration_table(SimpleNamespace(calibration=missing, input_shape=SHAPE), model,
                                          "10.4.0", tmp_path / "cache", PhaseTimes())
    assert not fallback.native and fallback.used["kind"] == "onnxruntime" and "run trt-native int8" in fallback.used["note"]
    # the engine key names the table that was really read: the fallback's key is that of an ORT-table build
    settings = {"onnxruntime": "1.21.1", "workspace_bytes": 1 << 30, "opt_level": 3}
    assert engine_key_options(plan, table, **settings)["calibration_table"] == "tensorrt-native"
    assert "calibration_table" not in engine_key_options(plan, fallback, **settings)
    plain = OrtTensorrtBackend()._calibration_table(SimpleNamespace(calibration=TableSource(tmp_path, native=False),
                                                                    input_shape=SHAPE), model, "10.4.0",
                                                    tmp_path / "cache", PhaseTimes())
    assert engine_key_options(plan, fallback, **settings) == engine_key_options(plan, plain, **settings)


def test_compute_path_runs_without_provider_synchronisation() -> None:
    from backends.ort_cuda import compute_run_options

    ort = pytest.importorskip("onnxruntime")
    options = compute_run_options(ort)
    assert options.get_run_config_entry("disable_synchronize_execution_providers") == "1"

    class Recording(FakeOrtSession):
        def run_with_iobinding(self, binding: Any, run_options: Any = None) -> None:
            self.runs.append(("iobinding", run_options))

    from backends.base import SessionInfo
    from backends.ort_cuda import OrtStaged

    fake = Recording()
    session = OrtGpuSession(fake, SessionInfo("ort-cuda", "fp32", "cuda"), device_id=0, stream=FakeStream(),
                            run_options=options, num_outputs=10, device=torch.device("cpu"))
    out = torch.zeros((2, 10))
    assert session.run(OrtStaged(input=torch.zeros((2, *SHAPE)), output=out, binding=object())) is out
    assert fake.runs == [("iobinding", options)]


# ------------------------------------------------------------------------------ activate, through the backends' code


class FakeBinding:
    def bind_input(self, *args: Any) -> None:
        pass

    def bind_output(self, *args: Any) -> None:
        pass


class FakeEpSession:
    """An InferenceSession stand-in: the TensorRT EP 'builds' an engine file in its cache dir on first run."""

    def __init__(self, path: Path, providers: list[tuple[str, dict[str, str]]]) -> None:
        self.path, self.providers, self.run_options = path, providers, []

    def io_binding(self) -> FakeBinding:
        return FakeBinding()

    def run_with_iobinding(self, binding: Any, run_options: Any = None) -> None:
        self.run_options.append(run_options)
        for name, options in self.providers:
            if name == "TensorrtExecutionProvider":
                (Path(options["trt_engine_cache_path"]) / "TensorrtExecutionProvider_0.engine").write_bytes(b"E")

    def get_providers(self) -> list[str]:
        return [name for name, _ in self.providers]


@pytest.fixture()
def fake_gpu(monkeypatch: pytest.MonkeyPatch, no_cuda: None) -> list[FakeEpSession]:
    from types import SimpleNamespace

    import backends.ort_cuda as ort_cuda_mod
    import backends.ort_trt as ort_trt_mod

    sessions: list[FakeEpSession] = []

    def create_session(path: Path, providers: list[tuple[str, dict[str, str]]], log: list[str]) -> FakeEpSession:
        sessions.append(FakeEpSession(Path(path), providers))
        return sessions[-1]

    class CpuSession(OrtGpuSession):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **{**kw, "device": torch.device("cpu")})

    for mod in (ort_cuda_mod, ort_trt_mod):
        monkeypatch.setattr(mod, "admit", lambda backend, precision: None)
        monkeypatch.setattr(mod, "create_session", create_session)
        monkeypatch.setattr(mod, "user_stream", lambda device_id: FakeStream())
        monkeypatch.setattr(mod, "OrtGpuSession", CpuSession)
    monkeypatch.setattr(ort_trt_mod, "gpu_identity",
                        lambda i: SimpleNamespace(name="NVIDIA A100", compute_capability=(8, 0)))
    return sessions


@pytest.mark.parametrize(("name", "precision"), [("ort-cuda", "fp32"), ("ort-trt", "tf32")])
def test_both_ort_gpu_backends_compute_on_the_user_stream(name: str, precision: str, tmp_path: Path,
                                                          fake_gpu: list) -> None:
    pytest.importorskip("onnxruntime")
    from backends.base import ModelArtifact
    from backends.gpu_common import timing_facts

    model = _tiny_onnx(tmp_path / "m.onnx")
    artifact = ModelArtifact(name="m", module=torch.nn.Identity(), input_shape=(3, 8, 8), num_outputs=10,
                             content_hash="0" * 64, onnx=lambda: model)
    options = {"trt_version": "10.4.0"} if name == "ort-trt" else {}
    session = backends.backend_class(name)(options).activate(artifact, precision, (1, 4), tmp_path / "cache")
    (fake,) = fake_gpu
    for provider, provider_options in fake.providers:
        if provider == "CUDAExecutionProvider":  # the TensorRT EP's binding knows only user_compute_stream
            assert provider_options["has_user_compute_stream"] == "True", provider
        assert provider_options["user_compute_stream"] == str(FakeStream.cuda_stream), provider
    assert isinstance(session.cuda_stream, FakeStream)
    assert fake.run_options and all(
        o.get_run_config_entry("disable_synchronize_execution_providers") == "1" for o in fake.run_options)
    assert session.info.details["gpu_timing"] == timing_facts()["gpu_timing"]
    assert "build" in session.info.prep_phases  # type: ignore[attr-defined]
    if name == "ort-cuda":  # the layer-profile pass opens this ONNX again
        assert session.info.details["onnx_path"] == str(model)
    cuda_options = dict(fake.providers)["CUDAExecutionProvider"]
    # fp32 cells compute in IEEE FP32, tf32 cells (the TensorRT EP's own maths from Ampere on) in TF32
    assert cuda_options["use_tf32"] == {"fp32": "False", "tf32": "True"}[precision]
    assert session.info.details["fp32_math"].startswith({"fp32": "ieee", "tf32": "tf32"}[precision])
    if name == "ort-trt":
        assert session.info.details["engines"] == ["TensorrtExecutionProvider_0.engine"]


def test_ort_trt_fp32_on_an_ampere_gpu_is_refused_at_activation(tmp_path: Path, fake_gpu: list) -> None:
    from backends.base import ModelArtifact

    model = _tiny_onnx(tmp_path / "m.onnx")
    artifact = ModelArtifact(name="m", module=torch.nn.Identity(), input_shape=(3, 8, 8), num_outputs=10,
                             content_hash="0" * 64, onnx=lambda: model)
    with pytest.raises(UnsupportedCombination, match="would compute in TF32 on NVIDIA A100"):
        OrtTensorrtBackend({"trt_version": "10.4.0"}).activate(artifact, "fp32", (1, 4), tmp_path / "cache")
    assert not fake_gpu, "refused before any session is built"


def test_a_precision_the_tensorrt_ep_turned_off_is_refused_from_its_log() -> None:
    from backends.ort_trt import precision_turned_off

    line = ("2026-12-04 10:00:00.1 [W:onnxruntime:Default, tensorrt_execution_provider.cc:2290 GetCapability] "
            "[TensorRT EP] ORT_TENSORRT_INT8_ENABLE is set, but platform doesn't support fast native int8")
    message = precision_turned_off("int8", ["something else", line])
    assert message is not None and "\n" not in message and "INT8 off" in message
    assert precision_turned_off("fp16", [line]) is None and precision_turned_off("int8", []) is None


def test_what_onnx_runtime_writes_to_stderr_while_a_session_is_built_is_captured(
        capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from backends.ort_common import captured_native_log

    lines: list[str] = []
    with captured_native_log(lines):
        os.write(2, b"[W:onnxruntime:Default] a C++ warning\n")  # as ORT's C++ logger writes it
    assert lines == ["[W:onnxruntime:Default] a C++ warning"]
    assert "C++ warning" not in capfd.readouterr().err


def test_ort_node_times_say_what_they_measure() -> None:
    from backends.layer_profile import ort_node_timer

    timer, note = ort_node_timer(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert timer == "host-launch" and "CUPTI" in note and "not by GPU time" in note
    assert ort_node_timer(["CPUExecutionProvider"])[0] == "host"
    assert ort_node_timer(["TensorrtExecutionProvider"])[0] == "unknown"


def test_use_tf32_is_only_set_when_asked() -> None:
    assert "use_tf32" not in ort_cuda_provider_options()
    assert ort_cuda_provider_options(use_tf32=False)["use_tf32"] == "False"
    assert ort_cuda_provider_options(use_tf32=True)["use_tf32"] == "True"
