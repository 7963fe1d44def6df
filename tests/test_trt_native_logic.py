"""trt-native without TensorRT or a GPU: build plans, profiles, the builder wiring, API names.

The builder wiring runs against a *strict fake* ``tensorrt`` module generated from the symbol lists
of the real bindings wheels (tests/data/trt_symbols/): touching a name that the TensorRT version
lacks raises AttributeError, as the real module would. That checks, per version, that the calls
each plan makes exist, and that TRT 11 plans never reach a weak-typing name.
"""

from __future__ import annotations

import itertools
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch

import backends
from backends.base import PRECISIONS
from backends.gpu_common import TRT_DTYPE_TO_TORCH, trt_dtype_to_torch
from backends.trt_api import TRT10_ONLY_API, TRT_API_USED, make_capturing_logger, trt_version_tuple
from backends.trt_loader import BuilderSettings, build_serialized_engine
from backends.trt_native import TrtNativeBackend
from backends.trt_plan import BuildPlan, plan_build, profile_for, resolve_int8_mode
from backends.trt_runner import engine_io
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination

SYMBOLS = Path(__file__).resolve().parent / "data" / "trt_symbols"
TRT_VERSIONS = ("10.4.0", "10.15.1.29", "11.4.0.106")
INT8_MODES = ("auto", "implicit", "explicit")
SHAPE = (3, 224, 224)


@lru_cache(maxsize=None)
def symbols(version_file: str) -> frozenset[str]:
    lines = (SYMBOLS / version_file).read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def symbol_file(version: str) -> str:
    major, minor = trt_version_tuple(version)
    return f"tensorrt-{major}.{minor}.txt"


def trt10_files() -> list[str]:
    return sorted(p.name for p in SYMBOLS.glob("tensorrt-10.*.txt"))


# ------------------------------------------------------------------------------ API names vs the wheels


def test_symbol_files_present() -> None:
    assert {"tensorrt-10.4.txt", "tensorrt-10.15.txt", "tensorrt-11.4.txt"} <= {p.name for p in SYMBOLS.iterdir()}


@pytest.mark.parametrize("version_file", trt10_files())
def test_every_declared_name_exists_in_trt10(version_file: str) -> None:
    missing = [name for name in TRT_API_USED if name not in symbols(version_file)]
    assert not missing, f"{version_file} lacks {missing}"


def test_declared_names_are_qualified_and_unique() -> None:
    assert len(set(TRT_API_USED)) == len(TRT_API_USED)
    assert all("." in n or n[0].isupper() or n == "__version__" for n in TRT_API_USED)


def test_exactly_the_weak_typing_names_are_missing_in_trt11() -> None:
    missing = {name for name in TRT_API_USED if name not in symbols("tensorrt-11.4.txt")}
    assert missing == TRT10_ONLY_API
    assert TRT10_ONLY_API <= set(TRT_API_USED)


# ------------------------------------------------------------------------------ plans, exhaustively

# (major, precision, int8 mode, strongly_typed option) -> (flags, onnx source, calibrator, float type) or an error
Expected = tuple[tuple[str, ...], str, bool, str] | type[Exception]
STRONG_OPTIONS = (None, True)


def expected_plan(major: int, precision: str, mode: str, strong_option: bool | None) -> Expected:
    if major == 10 and not strong_option and precision != "fp8":  # weakly typed: precision flags
        return {
            "fp32": ((), "fp32", False, "fp32"),
            "tf32": (("TF32",), "fp32", False, "fp32"),
            "fp16": (("FP16",), "fp32", False, "fp32"),
            "bf16": (("BF16",), "fp32", False, "fp32"),
            "int8": {
                "auto": (("INT8", "FP16"), "fp32", True, "fp32"),
                "implicit": (("INT8", "FP16"), "fp32", True, "fp32"),
                "explicit": (("INT8", "FP16"), "qdq", False, "fp32"),
            }[mode],
        }[precision]
    # strongly typed (TRT 11, TRT 10 with the option, fp8 everywhere): no precision flag, typed ONNX models
    return {
        "fp32": ((), "fp32", False, "fp32"),
        "tf32": (("TF32",), "fp32", False, "fp32"),  # a builder flag TensorRT 11 keeps
        "fp16": ((), "fp16", False, "fp16"),
        "bf16": ((), "bf16", False, "bf16"),
        "int8": {
            "auto": ((), "qdq", False, "fp16"),
            "implicit": UnsupportedCombination,
            "explicit": ((), "qdq", False, "fp16"),
        }[mode],
        "fp8": ((), "fp8-qdq", False, "fp16"),
    }[precision]


ALL_COMBOS = list(itertools.product(TRT_VERSIONS, PRECISIONS, INT8_MODES, STRONG_OPTIONS, (False, True)))


@pytest.mark.parametrize(("version", "precision", "mode", "strong", "sparse"), ALL_COMBOS)
def test_plan_matrix(version: str, precision: str, mode: str, strong: bool | None, sparse: bool) -> None:
    major = trt_version_tuple(version)[0]
    expected = expected_plan(major, precision, mode, strong)
    call = dict(precision=precision, trt_version=version, int8_mode=mode, has_calibration=True, sparse=sparse,
                batch_sizes=(1, 8, 32), strongly_typed=strong)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            plan_build(**call)  # type: ignore[arg-type]
        message = str(info.value)
        assert "\n" not in message
        assert "implicit" in message and ("removed in TensorRT 11" in message or "weakly typed network" in message)
        return
    flags, source, calibrator, float_type = expected
    plan = plan_build(**call)  # type: ignore[arg-type]
    assert plan.flags == flags + (("SPARSE_WEIGHTS",) if sparse else ())
    assert plan.onnx_source == source
    assert plan.use_calibrator is calibrator
    assert plan.float_type == float_type
    assert plan.profile == (1, 32, 32)
    strongly = major >= 11 or bool(strong) or precision == "fp8"
    assert plan.strongly_typed is strongly and plan.build_mode == ("strongly-typed" if strongly else "weakly-typed")
    assert plan.network_flags == (("STRONGLY_TYPED",) if strongly else ())
    assert plan.int8_mode == (None if precision != "int8" else ("explicit" if source == "qdq" else "implicit"))
    assert plan.sparse is sparse


@pytest.mark.parametrize(("version", "precision", "mode", "strong", "sparse"), ALL_COMBOS)
def test_no_plan_silently_builds_fp32(version: str, precision: str, mode: str, strong: bool | None,
                                      sparse: bool) -> None:
    try:
        plan = plan_build(precision, version, mode, True, sparse, (4,), strongly_typed=strong)
    except UnsupportedCombination:
        return
    reduced = {"FP16", "BF16", "INT8"} & set(plan.flags)
    if precision == "fp32":
        assert not reduced and plan.onnx_source == "fp32" and "TF32" not in plan.flags
    elif precision == "tf32":  # FP32 tensors, TF32 math: the TF32 flag, nothing reduced
        assert not reduced and plan.onnx_source == "fp32" and "TF32" in plan.flags
    else:  # the reduced precision comes from a flag (weak TRT 10) or from the ONNX model itself (strongly typed)
        assert reduced or plan.onnx_source in ("fp16", "bf16", "qdq", "fp8-qdq")
    if plan.strongly_typed:
        assert not reduced, "a strongly typed network takes no weak-typing flag"
        if plan.onnx_source in ("qdq", "fp8-qdq"):
            assert plan.float_type == "fp16", "Q/DQ layers outside the quantized ones must not stay FP32"
    if precision == "int8" and not plan.strongly_typed:
        assert {"INT8", "FP16"} <= set(plan.flags), "INT8 alone leaves non-INT8 layers in FP32"


QUANTIZED = ("int8", "fp8")


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "tf32"])
@pytest.mark.parametrize("trt10", [v for v in TRT_VERSIONS if v.startswith("10.")])
def test_a_strongly_typed_trt10_plan_is_the_trt11_plan(precision: str, trt10: str) -> None:
    """Like for like: TensorRT 10.x with strongly_typed builds exactly what TensorRT 11 builds."""
    def plan(version: str, strong: bool | None) -> dict[str, Any]:
        data = plan_build(precision, version, "auto", True, False, (1, 8), strongly_typed=strong).to_dict()
        return {k: v for k, v in data.items() if k not in ("trt_version", "notes")}

    eleven = plan("11.4.0.106", None)
    assert plan(trt10, True) == eleven
    assert eleven["network_flags"] == ["STRONGLY_TYPED"] and eleven["flags"] == []
    if precision in QUANTIZED:
        assert eleven["float_type"] == "fp16" and eleven["onnx_source"] in ("qdq", "fp8-qdq")


def test_trt11_refuses_weak_typing_in_one_line() -> None:
    with pytest.raises(UnsupportedCombination) as info:
        plan_build("fp16", "11.4.0.106", batch_sizes=(1,), strongly_typed=False)
    assert "strongly typed networks only" in str(info.value) and "\n" not in str(info.value)


def test_int8_needs_calibration_data() -> None:
    for version in TRT_VERSIONS:
        for precision in QUANTIZED:
            with pytest.raises(HarnessError, match="calibration"):
                plan_build(precision, version, "auto", has_calibration=False, batch_sizes=(8,))
    # other precisions do not
    assert plan_build("fp16", "10.4.0", has_calibration=False, batch_sizes=(8,)).flags == ("FP16",)


def test_default_int8_mode_follows_the_trt_version() -> None:
    assert resolve_int8_mode("auto", "10.4.0") == "implicit"
    assert resolve_int8_mode("auto", "10.15.1.29") == "implicit"
    assert resolve_int8_mode("auto", "11.4.0.106") == "explicit"
    assert resolve_int8_mode("explicit", "10.4.0") == "explicit"
    with pytest.raises(UnsupportedCombination, match="removed in TensorRT 11"):
        resolve_int8_mode("implicit", "11.0.0")
    with pytest.raises(HarnessError, match="int8 mode"):
        resolve_int8_mode("qdq", "10.4.0")


def test_bad_requests() -> None:
    with pytest.raises(UnsupportedCombination, match="unknown precision"):
        plan_build("int4", "10.4.0", batch_sizes=(1,))
    with pytest.raises(UnsupportedCombination, match="TensorRT 10 or newer"):
        plan_build("fp32", "8.6.1", batch_sizes=(1,))
    with pytest.raises(HarnessError, match="int8 mode"):
        plan_build("fp32", "10.4.0", "sometimes", batch_sizes=(1,))


def test_compute_capability_rules_apply() -> None:
    v100, a100, h100 = (7, 0), (8, 0), (9, 0)
    with pytest.raises(UnsupportedCombination, match="sm_70"):
        plan_build("fp16", "10.15.1.29", batch_sizes=(1,), compute_capability=v100)  # Volta dropped after 10.4
    with pytest.raises(UnsupportedCombination, match="bf16"):
        plan_build("bf16", "10.4.0", batch_sizes=(1,), compute_capability=v100)
    assert plan_build("int8", "10.4.0", "auto", True, batch_sizes=(1,), compute_capability=v100).use_calibrator
    assert plan_build("bf16", "10.15.1.29", batch_sizes=(1,), compute_capability=a100).flags == ("BF16",)
    with pytest.raises(UnsupportedCombination, match="removed"):
        plan_build("int8", "11.4.0.106", "implicit", True, batch_sizes=(1,), compute_capability=h100)
    assert plan_build("int8", "11.4.0.106", "auto", True, batch_sizes=(1,), compute_capability=h100).onnx_source == "qdq"
    for version in TRT_VERSIONS:  # FP8 tensor cores: sm_89 and newer, refused below with the GPU named
        with pytest.raises(UnsupportedCombination, match=r"compute capability 8\.0 \(Ampere\)"):
            plan_build("fp8", version, "auto", True, batch_sizes=(1,), compute_capability=a100)
        assert plan_build("fp8", version, "auto", True, batch_sizes=(1,), compute_capability=h100).strongly_typed
        assert plan_build("fp8", version, "auto", True, batch_sizes=(1,), compute_capability=(8, 9)).float_type == "fp16"


def test_sparse_fp32_is_noted() -> None:
    plan = plan_build("fp32", "10.15.1.29", sparse=True, batch_sizes=(1,))
    assert plan.flags == ("SPARSE_WEIGHTS",) and plan.notes


def test_plan_to_dict() -> None:
    d = plan_build("int8", "10.4.0", "auto", True, True, (1, 128)).to_dict()
    assert d["flags"] == ["INT8", "FP16", "SPARSE_WEIGHTS"] and d["profile"] == [1, 128, 128]
    assert d["onnx_source"] == "fp32" and d["use_calibrator"] is True and d["int8_mode"] == "implicit"


# ------------------------------------------------------------------------------ profiles


@pytest.mark.parametrize(
    "sweep",
    [(1,), (128,), (1, 8, 32, 64, 128), (128, 1, 32), (7, 3), (256, 256, 16)],
)
def test_profile_covers_every_sweep_batch_size(sweep: tuple[int, ...]) -> None:
    low, opt, high = profile_for(sweep)
    assert low == min(sweep) and opt == high == max(sweep)
    assert all(low <= b <= high for b in sweep)
    plan = plan_build("fp16", "10.4.0", batch_sizes=sweep)
    assert plan.profile == (low, opt, high)


def test_profile_minimum_override_and_errors() -> None:
    assert profile_for((32, 128), min_batch=1) == (1, 128, 128)  # covers the ragged last batch of a dataset
    assert plan_build("fp32", "10.4.0", batch_sizes=(32, 128), profile_min=1).profile == (1, 128, 128)
    with pytest.raises(HarnessError):
        profile_for((32, 128), min_batch=64)
    with pytest.raises(HarnessError):
        profile_for((32,), min_batch=0)
    with pytest.raises(HarnessError, match="no batch sizes"):
        profile_for(())
    with pytest.raises(HarnessError):
        profile_for((0, 8))


# ------------------------------------------------------------------------------ builder settings / key options


def test_builder_settings_key_options() -> None:
    implicit = plan_build("int8", "10.4.0", "auto", True, False, (1, 64))
    explicit = plan_build("int8", "10.4.0", "explicit", True, False, (1, 64))
    settings = BuilderSettings(workspace_bytes=1 << 30, opt_level=4, detailed=True, calibration_batch=16)
    a, b = settings.key_options(implicit), settings.key_options(explicit)
    assert a["calibration_batch"] == 16 and "calibration_batch" not in b
    assert a["onnx_source"] == "fp32" and b["onnx_source"] == "qdq"
    assert a["profile"] == [1, 64, 64] and a["workspace_bytes"] == 1 << 30 and a["opt_level"] == 4
    assert a["profiling_verbosity"] == "detailed"
    assert BuilderSettings(detailed=False).key_options(implicit)["profiling_verbosity"] == "layer_names_only"
    assert "cuda_graph" not in a
    for bad in (dict(workspace_bytes=0), dict(opt_level=6), dict(opt_level=-1), dict(calibration_batch=0)):
        with pytest.raises(HarnessError):
            BuilderSettings(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ a strict fake tensorrt


class Severity(IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class FakeTrt:
    """``tensorrt`` as far as one symbol list allows; records every name touched and every call."""

    def __init__(self, version: str, *, parse_ok: bool = True, build_ok: bool = True, timing_ok: bool = True,
                 inputs: tuple[str, ...] = ("input",), reject_profile: bool = False,
                 calib_profile_ok: bool = True) -> None:
        self.version = version
        self.reject_profile, self.calib_profile_ok = reject_profile, calib_profile_ok
        self.names = symbols(symbol_file(version))
        self.used: set[str] = set()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.parse_ok, self.build_ok, self.timing_ok, self.inputs = parse_ok, build_ok, timing_ok, inputs

    def touch(self, qualified: str) -> None:
        if qualified not in self.names:
            raise AttributeError(f"tensorrt {self.version} has no {qualified}")
        self.used.add(qualified)

    def record(self, qualified: str, *args: Any) -> None:
        self.calls.append((qualified, args))

    def called(self, qualified: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == qualified]

    def module(self) -> Any:
        return FakeModule(self)


class Strict:
    """An object whose public attributes must exist in the symbol list under ``<cls>.<name>``."""

    def __init__(self, fake: FakeTrt, cls: str, **attrs: Any) -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_cls", cls)
        for k, v in attrs.items():
            object.__setattr__(self, k, v)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            object.__getattribute__(self, "_fake").touch(f"{object.__getattribute__(self, '_cls')}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        qualified = f"{self._cls}.{name}"
        self._fake.touch(qualified)
        self._fake.record(qualified, value)
        object.__setattr__(self, name, value)


class EnumSpace:
    def __init__(self, fake: FakeTrt, cls: str) -> None:
        self._fake, self._cls = fake, cls

    def __getattr__(self, name: str) -> str:
        self._fake.touch(f"{self._cls}.{name}")
        return f"{self._cls}.{name}"


#: NvInfer.h's values (kEXPLICIT_BATCH = 0 in 10.x, kSTRONGLY_TYPED = 1); the code must not assume them.
CREATION_FLAG_VALUES = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                        "PREFER_AOT_PYTHON_PLUGINS": 3}


class IntEnumSpace(EnumSpace):
    """An enum whose members convert to int (``1 << int(member)`` builds a creation-flag mask)."""

    def __getattr__(self, name: str) -> Any:
        self._fake.touch(f"{self._cls}.{name}")
        return CREATION_FLAG_VALUES[name]


class FakeModule:
    def __init__(self, fake: FakeTrt) -> None:
        object.__setattr__(self, "_fake", fake)

    def __getattr__(self, name: str) -> Any:
        fake: FakeTrt = object.__getattribute__(self, "_fake")
        fake.touch(name)
        if name == "__version__":
            return fake.version
        if name == "ILogger":
            return FakeILogger
        if name == "Builder":
            return lambda logger: FakeBuilder(fake, "Builder", _logger=logger)
        if name == "OnnxParser":
            return lambda network, logger: FakeParser(fake, "OnnxParser", num_errors=0 if fake.parse_ok else 2,
                                                      _logger=logger)
        if name in ("BuilderFlag", "MemoryPoolType", "ProfilingVerbosity", "TensorIOMode", "LayerInformationFormat"):
            return EnumSpace(fake, name)
        if name == "NetworkDefinitionCreationFlag":
            return IntEnumSpace(fake, name)
        raise AttributeError(f"the fake has no {name}")


class FakeILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class FakeBuilder(Strict):
    def create_network(self, flags: int) -> Any:
        self._fake.record("Builder.create_network", flags)
        return FakeNetwork(self._fake, "INetworkDefinition", num_inputs=len(self._fake.inputs))

    def create_builder_config(self) -> Any:
        return FakeConfig(self._fake, "IBuilderConfig")

    def create_optimization_profile(self) -> Any:
        return FakeProfile(self._fake, "IOptimizationProfile")

    def build_serialized_network(self, network: Any, config: Any) -> Any:
        self._fake.record("Builder.build_serialized_network", network, config)
        if not self._fake.build_ok:
            self._logger.log(Severity.ERROR, "Error Code 4: out of memory while building\nsecond line")
            return None
        return memoryview(b"ENGINE-" + self._fake.version.encode())


class FakeNetwork(Strict):
    def get_input(self, i: int) -> Any:
        return Strict(self._fake, "ITensor", name=self._fake.inputs[i])


class FakeParser(Strict):
    def parse_from_file(self, path: str) -> bool:
        self._fake.record("OnnxParser.parse_from_file", path)
        return self._fake.parse_ok

    def get_error(self, i: int) -> Any:
        return FakeParserError(self._fake, "ParserError", _index=i)


class FakeParserError(Strict):
    def desc(self) -> str:
        return f"unsupported operator #{self._index}"

    def node_name(self) -> str:
        return f"/node{self._index}"


class FakeProfile(Strict):
    def set_shape(self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> None:
        self._fake.record("IOptimizationProfile.set_shape", self, name, low, opt, high)


class FakeTimingCache(Strict):
    def serialize(self) -> bytes:
        return b"TIMING:" + self._data


class FakeConfig(Strict):
    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self._fake.record("IBuilderConfig.set_memory_pool_limit", pool, size)

    def set_flag(self, flag: str) -> None:
        self._fake.record("IBuilderConfig.set_flag", flag)

    def clear_flag(self, flag: str) -> None:
        self._fake.record("IBuilderConfig.clear_flag", flag)

    def add_optimization_profile(self, profile: Any) -> int:
        self._fake.record("IBuilderConfig.add_optimization_profile", profile)
        added = len(self._fake.called("IBuilderConfig.add_optimization_profile"))
        return -1 if self._fake.reject_profile else added - 1

    def set_calibration_profile(self, profile: Any) -> bool:
        self._fake.record("IBuilderConfig.set_calibration_profile", profile)
        return self._fake.calib_profile_ok

    def create_timing_cache(self, data: bytes) -> Any:
        self._fake.record("IBuilderConfig.create_timing_cache", data)
        return FakeTimingCache(self._fake, "ITimingCache", _data=bytes(data))

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self._fake.record("IBuilderConfig.set_timing_cache", cache, ignore_mismatch)
        return self._fake.timing_ok or not cache._data  # an empty cache always fits


def _build(fake: FakeTrt, plan: BuildPlan, *, settings: BuilderSettings | None = None,
           timing: bytes | None = None, calibrator: Any = None) -> Any:
    trt = fake.module()
    logger = make_capturing_logger(trt)
    out = build_serialized_engine(trt, Path("/models/tiny.onnx"), plan, settings or BuilderSettings(), SHAPE,
                                  logger=logger, timing_cache=timing, calibrator=calibrator)
    return out, logger


def _api_prefixes() -> set[str]:
    prefixes = set(TRT_API_USED)
    for name in TRT_API_USED:
        parts = name.split(".")
        prefixes.update(".".join(parts[:k]) for k in range(1, len(parts)))
    return prefixes


VALID_PLANS = []
for _v, _p, _m, _t, _s in ALL_COMBOS:
    try:
        VALID_PLANS.append(plan_build(_p, _v, _m, True, _s, (1, 16, 64), strongly_typed=_t))
    except UnsupportedCombination:
        pass


@pytest.mark.parametrize("plan", VALID_PLANS, ids=lambda p: f"{p.trt_version}-{p.precision}-{p.onnx_source}-"
                                                            f"{'+'.join(p.flags) or 'noflags'}-{p.build_mode}")
def test_every_valid_plan_builds_against_its_trt_version(plan: BuildPlan) -> None:
    fake = FakeTrt(plan.trt_version)
    out, _ = _build(fake, plan, calibrator=object() if plan.use_calibrator else None)
    assert out.engine == b"ENGINE-" + plan.trt_version.encode()
    assert fake.called("IBuilderConfig.set_flag") == [(f"BuilderFlag.{f}",) for f in plan.flags]
    # fp32 means IEEE FP32: TensorRT's default TF32 is switched off, and only for fp32
    assert fake.called("IBuilderConfig.clear_flag") == ([("BuilderFlag.TF32",)] if plan.precision == "fp32" else [])
    assert fake.used <= _api_prefixes(), f"used but not declared in TRT_API_USED: {fake.used - _api_prefixes()}"
    # a strongly typed plan creates a strongly typed network, on 10.x as on 11.x; a weak one the plain network
    assert fake.called("Builder.create_network") == [(1 << 1 if plan.strongly_typed else 0,)]
    if plan.strongly_typed:
        assert not fake.used & TRT10_ONLY_API
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in fake.used


def test_wiring_of_an_implicit_int8_build() -> None:
    plan = plan_build("int8", "10.4.0", "auto", True, True, (1, 8, 128))
    fake = FakeTrt("10.4.0")
    calibrator = object()
    settings = BuilderSettings(workspace_bytes=2 << 30, opt_level=5, detailed=True, calibration_batch=16)
    out, _ = _build(fake, plan, settings=settings, timing=b"old", calibrator=calibrator)

    assert fake.called("Builder.create_network") == [(0,)]
    assert fake.called("OnnxParser.parse_from_file") == [("/models/tiny.onnx",)]
    assert fake.called("IBuilderConfig.set_memory_pool_limit") == [("MemoryPoolType.WORKSPACE", 2 << 30)]
    assert fake.called("IBuilderConfig.builder_optimization_level") == [(5,)]
    assert fake.called("IBuilderConfig.set_flag") == [("BuilderFlag.INT8",), ("BuilderFlag.FP16",),
                                                      ("BuilderFlag.SPARSE_WEIGHTS",)]
    assert fake.called("IBuilderConfig.profiling_verbosity") == [("ProfilingVerbosity.DETAILED",)]
    shapes = fake.called("IOptimizationProfile.set_shape")
    assert [s[1:] for s in shapes] == [
        ("input", (1, *SHAPE), (128, *SHAPE), (128, *SHAPE)),  # the optimization profile
        ("input", (16, *SHAPE), (16, *SHAPE), (16, *SHAPE)),  # the calibration profile
    ]
    (main_profile,), = fake.called("IBuilderConfig.add_optimization_profile")
    (calib_profile,), = fake.called("IBuilderConfig.set_calibration_profile")
    assert main_profile is shapes[0][0] and calib_profile is shapes[1][0]
    assert fake.called("IBuilderConfig.int8_calibrator") == [(calibrator,)]
    assert fake.called("IBuilderConfig.create_timing_cache") == [(b"old",)]
    (cache, ignore), = fake.called("IBuilderConfig.set_timing_cache")
    assert ignore is False and cache._data == b"old"
    assert out.timing_cache == b"TIMING:old" and not out.notes


def test_explicit_and_fp32_builds_never_touch_the_calibrator_api() -> None:
    for plan in (plan_build("int8", "10.15.1.29", "explicit", True, False, (8,)),
                 plan_build("fp32", "10.15.1.29", batch_sizes=(8,))):
        fake = FakeTrt("10.15.1.29")
        _build(fake, plan)
        assert not fake.called("IBuilderConfig.set_calibration_profile")
        assert not fake.called("IBuilderConfig.int8_calibrator")
        assert len(fake.called("IOptimizationProfile.set_shape")) == 1


def test_trt11_rejects_a_weak_typing_flag_loudly() -> None:
    forged = BuildPlan(precision="fp16", trt_version="11.4.0.106", strongly_typed=True, flags=("FP16",),
                       onnx_source="fp32", use_calibrator=False, profile=(1, 1, 1))
    with pytest.raises(UnsupportedCombination, match="BuilderFlag.FP16.*removed weak typing"):
        _build(FakeTrt("11.4.0.106"), forged)


def test_implicit_plan_without_calibrator_is_refused() -> None:
    with pytest.raises(HarnessError, match="calibrator"):
        _build(FakeTrt("10.4.0"), plan_build("int8", "10.4.0", "implicit", True, batch_sizes=(1,)))


def test_detailed_off_uses_layer_names_only() -> None:
    fake = FakeTrt("10.4.0")
    _build(fake, plan_build("fp16", "10.4.0", batch_sizes=(1,)), settings=BuilderSettings(detailed=False))
    assert fake.called("IBuilderConfig.profiling_verbosity") == [("ProfilingVerbosity.LAYER_NAMES_ONLY",)]


def test_mismatched_timing_cache_starts_fresh() -> None:
    fake = FakeTrt("10.4.0", timing_ok=False)
    out, _ = _build(fake, plan_build("fp16", "10.4.0", batch_sizes=(1,)), timing=b"from-another-gpu")
    assert fake.called("IBuilderConfig.create_timing_cache") == [(b"from-another-gpu",), (b"",)]
    assert out.timing_cache == b"TIMING:" and out.notes


def test_parser_errors_are_reported() -> None:
    with pytest.raises(HarnessError) as info:
        _build(FakeTrt("10.4.0", parse_ok=False), plan_build("fp32", "10.4.0", batch_sizes=(1,)))
    msg = str(info.value)
    assert "could not parse tiny.onnx" in msg and "/node0: unsupported operator #0" in msg and "/node1" in msg


def test_unexpected_inputs_are_reported() -> None:
    with pytest.raises(HarnessError, match="exactly one named 'input'"):
        _build(FakeTrt("10.4.0", inputs=("images",)), plan_build("fp32", "10.4.0", batch_sizes=(1,)))


def test_failed_build_reports_the_log_on_one_line() -> None:
    with pytest.raises(HarnessError) as info:
        _build(FakeTrt("10.15.1.29", build_ok=False), plan_build("fp16", "10.15.1.29", batch_sizes=(1,)))
    msg = str(info.value)
    assert "could not build an engine from tiny.onnx" in msg and "['FP16']" in msg
    assert "out of memory while building" in msg and "\n" not in msg


def test_capturing_logger_threshold() -> None:
    trt = FakeTrt("10.4.0").module()
    logger = make_capturing_logger(trt, "WARNING", keep=2)
    for severity, text in [(Severity.VERBOSE, "v"), (Severity.INFO, "i"), (Severity.WARNING, "w"),
                           (Severity.ERROR, "e"), (Severity.INTERNAL_ERROR, "x")]:
        logger.log(severity, text)
    assert list(logger.messages) == ["[ERROR] e", "[INTERNAL_ERROR] x"]  # keeps the last two at >= WARNING
    verbose = make_capturing_logger(trt, "verbose")
    verbose.log(Severity.VERBOSE, "v")
    assert list(verbose.messages) == ["[VERBOSE] v"]


# ------------------------------------------------------------------------------ runtime helpers


class FakeDtype:
    def __init__(self, name: str) -> None:
        self.name = name


def test_trt_dtype_mapping() -> None:
    assert trt_dtype_to_torch(FakeDtype("FLOAT")) is torch.float32
    assert trt_dtype_to_torch(FakeDtype("HALF")) is torch.float16
    assert trt_dtype_to_torch("BF16") is torch.bfloat16
    assert trt_dtype_to_torch("DataType.INT8") is torch.int8
    assert set(TRT_DTYPE_TO_TORCH) <= {n.split(".", 1)[1] for n in symbols("tensorrt-10.4.txt")
                                       if n.startswith("DataType.")}
    with pytest.raises(HarnessError, match="FP8"):
        trt_dtype_to_torch(FakeDtype("FP8"))


def test_engine_io_discovery() -> None:
    fake = FakeTrt("10.15.1.29")
    trt = fake.module()

    class FakeEngine(Strict):
        def get_tensor_name(self, i: int) -> str:
            return ["input", "logits"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "TensorIOMode.INPUT" if name == "input" else "TensorIOMode.OUTPUT"

        def get_tensor_dtype(self, name: str) -> FakeDtype:
            return FakeDtype("FLOAT" if name == "input" else "HALF")

    io = engine_io(trt, FakeEngine(fake, "ICudaEngine", num_io_tensors=2))
    assert [(s.name, s.is_input, s.dtype) for s in io] == [("input", True, torch.float32),
                                                           ("logits", False, torch.float16)]
    assert fake.used <= _api_prefixes()


# ------------------------------------------------------------------------------ on this GPU-less machine

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without a GPU")


def _facts(**kw: Any) -> Any:
    from harness.machine import MachineFacts

    base = dict(torch_version="2.5", torch_cuda_available=True, tensorrt_version="10.15.1.29", gpu_visible=True,
                gpu_cc=(8, 0), gpu_name="NVIDIA A100")
    base.update(kw)
    return MachineFacts(**base)


def test_availability_rule_is_a_pure_function_of_the_facts() -> None:
    from harness.gpu.capabilities import trt_precision_support

    for p in TrtNativeBackend.precisions:
        assert TrtNativeBackend.unavailable_reason(p, _facts(gpu_cc=(9, 0), gpu_name="NVIDIA H200")) is None
    a100 = TrtNativeBackend.unavailable_reason("fp8", _facts())  # FP8 tensor cores start at sm_89
    assert a100 is not None and "compute capability 8.0" in a100 and "\n" not in a100
    no_trt = _facts(tensorrt_version=None, tensorrt_error="No module named 'tensorrt'")
    assert TrtNativeBackend.unavailable_reason("fp32", no_trt) == "No module named 'tensorrt'"
    no_gpu = _facts(gpu_visible=False, torch_cuda_available=False, torch_cuda_note="no driver", gpu_cc=None)
    assert "no NVIDIA GPU" in TrtNativeBackend.unavailable_reason("fp16", no_gpu)
    torch_cpu = _facts(torch_cuda_available=False, torch_cuda_note="CPU-only torch build")
    assert "torch CUDA tensors" in TrtNativeBackend.unavailable_reason("fp32", torch_cpu)
    volta = _facts(gpu_cc=(7, 0), tensorrt_version="10.4.0", gpu_name="Tesla V100")
    for p in TrtNativeBackend.precisions:
        rule = trt_precision_support("10.4.0", (7, 0))[p]
        assert TrtNativeBackend.unavailable_reason(p, volta) == (None if rule.ok else rule.reason)
    assert not trt_precision_support("10.4.0", (7, 0))["bf16"].ok  # the rule really fires somewhere
    assert "supports" in TrtNativeBackend.unavailable_reason("int4", _facts())


@needs_no_gpu
def test_validate_request_trt_native_int8_is_one_line() -> None:
    with pytest.raises(BackendUnavailable) as info:
        backends.validate_request("trt-native", "int8")
    msg = str(info.value)
    assert msg.startswith("backend 'trt-native' cannot run here: ") and "\n" not in msg


@needs_no_gpu
def test_activate_refuses_before_doing_any_work(tmp_path: Path) -> None:
    from backends.base import ModelArtifact

    def never() -> Path:
        raise AssertionError("activate must not export anything on a machine that cannot run it")

    artifact = ModelArtifact(name="m", module=torch.nn.Identity(), input_shape=SHAPE, num_outputs=10,
                             content_hash="0" * 64, onnx=never)
    with pytest.raises(BackendUnavailable):
        TrtNativeBackend().activate(artifact, "fp16", (1,), tmp_path)
    assert not any(tmp_path.iterdir())


def test_backend_declaration() -> None:
    assert TrtNativeBackend.name == "trt-native" and TrtNativeBackend.devices == frozenset({"cuda"})
    assert TrtNativeBackend.precisions == ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
    assert backends.backend_class("trt-native") is TrtNativeBackend


# ------------------------------------------------------------------------------ runtime on a real GPU (no TensorRT)
#
# TrtNativeSession's own work (stream, torch buffers, shape/address binding, CUDA graphs, CUDA-event
# timing) against a fake engine whose execute_async_v3 is a real cudaMemcpy2DAsync on the given stream:
# logits[b, :10] = input[b].flatten()[:10]. Skipped without a GPU.

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_SHAPE = (3, 8, 8)


def _cudart() -> Any:
    import ctypes

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    paths = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libcudart" in line]
    if not paths:
        pytest.skip("libcudart is not loaded by torch (statically linked?)")
    lib = ctypes.CDLL(paths[0])
    fn = lib.cudaMemcpy2DAsync
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                   ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


class CopyContext:
    def __init__(self, memcpy2d: Any, counter: list[int]) -> None:
        self.memcpy2d, self.shape, self.addr, self.counter = memcpy2d, None, {}, counter

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == "input"
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert name == "logits" and self.shape is not None
        return (self.shape[0], 10)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        b, c, h, w = self.shape  # type: ignore[misc]
        rc = self.memcpy2d(self.addr["logits"], 40, self.addr["input"], c * h * w * 4, 40, b, 3, stream_handle)
        self.counter[0] += 1
        return rc == 0


class CopyEngine:
    num_io_tensors = 2

    def __init__(self, memcpy2d: Any) -> None:
        self.memcpy2d, self.executions, self.contexts = memcpy2d, [0], []

    def get_tensor_name(self, i: int) -> str:
        return ["input", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> FakeDtype:
        return FakeDtype("FLOAT")

    def create_execution_context(self) -> CopyContext:
        self.contexts.append(CopyContext(self.memcpy2d, self.executions))
        return self.contexts[-1]


@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_gpu_session_runtime_with_a_copy_engine(cuda_graph: bool) -> None:
    from types import SimpleNamespace

    from backends.base import SessionInfo
    from backends.trt_runner import TrtNativeSession
    from harness.measure.timing import CudaEventTimer, TimingSettings, measure, timer_for

    engine = CopyEngine(_cudart())
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"))
    session = TrtNativeSession(trt=trt, runtime=None, engine=engine, info=SessionInfo("trt-native", "fp32", "cuda"),
                               input_shape=GPU_SHAPE, profiles=((1, 8, 8),), batch_sizes=(1, 4, 8),
                               cuda_graph=cuda_graph)
    assert session.min_batch == 1 and session.max_batch == 8
    assert session.cuda_stream is not None and session.cuda_stream != torch.cuda.current_stream()
    if cuda_graph:
        assert session.graph_batches == (1, 4, 8) and len(engine.contexts) == 3  # one context per captured shape

    def expect(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)[:, :10]

    for b in (4, 8, 1):
        host = torch.randn((b, *GPU_SHAPE))
        out = session.infer(host)  # e2e: host in, host out, synchronised
        assert out.device.type == "cpu" and out.dtype == torch.float32 and torch.equal(out, expect(host))
        staged = session.stage(host)  # compute: enqueue only
        assert staged.is_cuda
        y = session.run(staged)
        session.cuda_stream.synchronize()
        assert torch.equal(y.cpu(), expect(host))

    # a batch inside the profile but outside the sweep runs without a graph (output allocated lazily)
    host = torch.randn((2, *GPU_SHAPE))
    assert torch.equal(session.infer(host), expect(host))
    with pytest.raises(HarnessError, match="outside the engine's profile"):
        session.infer(torch.randn((9, *GPU_SHAPE)))

    # a foreign device tensor is copied into the graph's input buffer
    foreign = torch.randn((4, *GPU_SHAPE), device="cuda")
    torch.cuda.synchronize()
    y = session.run(foreign)
    session.cuda_stream.synchronize()
    assert torch.equal(y.cpu(), expect(foreign.cpu()))

    # staging a new batch and running again sees the new data (graphs replay the fixed buffers)
    first, second = torch.randn((8, *GPU_SHAPE)), torch.randn((8, *GPU_SHAPE))
    session.run(session.stage(first))
    y = session.run(session.stage(second))
    session.cuda_stream.synchronize()
    assert torch.equal(y.cpu(), expect(second))

    # the timing engine measures run() with CUDA events on the session's stream
    timer = timer_for("cuda", "compute", session.cuda_stream)
    assert isinstance(timer, CudaEventTimer)
    staged = [session.stage(torch.randn((8, *GPU_SHAPE)))]
    before = engine.executions[0]
    result = measure(session.run, staged, batch_size=8, config=TimingSettings(warmup=2, iterations=20, repeats=2, min_seconds=0, warmup_seconds=0),
                     definition="compute", timer=timer)
    assert len(result.samples_ns) == 40 and all(s > 0 for s in result.samples_ns)
    executed = engine.executions[0] - before
    assert executed == (0 if cuda_graph else 44)  # with graphs, replays do not call execute_async_v3
    session.close()


# ----------------------------------------------------------------------------- per-batch profiles, checked returns


def test_per_batch_profiles_are_built_in_order_with_opt_at_each_batch() -> None:
    from backends.trt_plan import profile_index, profiles_for

    plan = plan_build("fp16", "10.15.1.29", batch_sizes=(8, 1, 32), profile_mode="per-batch")
    assert plan.all_profiles == ((1, 1, 1), (1, 8, 8), (1, 32, 32)) and plan.profile == (1, 32, 32)
    fake = FakeTrt("10.15.1.29")
    _build(fake, plan)
    shapes = [args[2:] for args in fake.called("IOptimizationProfile.set_shape")]
    assert shapes == [((b0, *SHAPE), (b, *SHAPE), (b, *SHAPE)) for b0, b in ((1, 1), (1, 8), (1, 32))]
    assert len(fake.called("IBuilderConfig.add_optimization_profile")) == 3
    assert profiles_for((8, 1, 32), "shared") == ((1, 32, 32),)
    assert [profile_index(plan.all_profiles, b) for b in (1, 2, 8, 9, 32)] == [0, 1, 1, 2, 2]
    with pytest.raises(HarnessError, match="outside the engine's profiles"):
        profile_index(plan.all_profiles, 33)
    with pytest.raises(HarnessError, match="profiles must be one of"):
        profiles_for((1,), "per-layer")
    shared = BuilderSettings().key_options(plan_build("fp16", "10.15.1.29", batch_sizes=(1, 8, 32)))
    assert "profiles" not in shared and BuilderSettings().key_options(plan)["profiles"] == [[1, 1, 1], [1, 8, 8],
                                                                                           [1, 32, 32]]


def test_a_rejected_profile_or_calibration_profile_fails_loudly() -> None:
    with pytest.raises(HarnessError, match="add_optimization_profile returned -1"):
        _build(FakeTrt("10.15.1.29", reject_profile=True), plan_build("fp32", "10.15.1.29"))
    plan = plan_build("int8", "10.4.0", "implicit", True, batch_sizes=(1, 8))
    with pytest.raises(HarnessError, match="set_calibration_profile returned False"):
        _build(FakeTrt("10.4.0", calib_profile_ok=False), plan, calibrator=object())


# ------------------------------------------------------------------------------ strongly typed builds, end to end
#
# fp16, bf16, int8 and fp8 on TensorRT 11.4 (and 10.x strongly typed) with no user-supplied ONNX: the plan's model
# is made here (the FP16/BF16 conversion, the Q/DQ model with FP16 float parts) and handed to the builder of a
# strict fake generated from the real 11.4 bindings' symbol list.


class _QdqSource:
    """The calibration source's Q/DQ side over in-memory batches (the quantizers are the real ones)."""

    def __init__(self, fp32: Path, work: Path) -> None:
        self.fp32, self.work, self.provenance_hash = fp32, work, "f" * 16

    def qdq_onnx(self, target: str, phases: Any) -> Path:
        import numpy as np

        from calib.ort_qdq import build_qdq_model

        out = self.work / f"qdq-{target}.onnx"
        if not out.exists():
            batches = [np.random.default_rng(i).normal(size=(4, *TINY)).astype(np.float32) for i in range(2)]
            build_qdq_model(self.fp32, lambda: iter(batches), out, "minmax", target=target, num_batches=2,
                            preprocess=False)
        return out


TINY = (3, 8, 8)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from types import SimpleNamespace

    from harness.onnx_export import export_onnx
    from harness.store.fingerprint import model_content_hash

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    work = tmp_path_factory.mktemp("strong")
    fp32 = export_onnx(module, TINY, content_hash=model_content_hash(module), cache_dir=work, name="tiny").path
    return SimpleNamespace(onnx=lambda: fp32, calibration=_QdqSource(fp32, work), input_shape=TINY)


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8", "fp8"])
def test_trt11_plans_build_from_models_the_harness_made(precision: str, tiny_artifact: Any, tmp_path: Path) -> None:
    import onnx

    from backends.base import PhaseTimes
    from backends.trt_plan import onnx_for_plan
    from backends.typed_onnx import node_types

    files = {}
    for version, strong in (("11.4.0.106", None), ("10.15.1.29", True), ("10.4.0", True)):
        plan = plan_build(precision, version, "auto", True, False, (1, 4), strongly_typed=strong,
                          compute_capability=(9, 0))
        phases, record = PhaseTimes(), {}
        path = onnx_for_plan(plan, tiny_artifact, None, phases, cache_dir=tmp_path, record=record)
        files[version] = path
        fake = FakeTrt(version)
        trt = fake.module()
        build_serialized_engine(trt, path, plan, BuilderSettings(), TINY, logger=make_capturing_logger(trt))
        assert fake.called("OnnxParser.parse_from_file") == [(str(path),)]
        assert fake.called("Builder.create_network") == [(1 << 1,)] and not fake.called("IBuilderConfig.set_flag")
        assert not fake.used & TRT10_ONLY_API
        assert "convert" in phases.seconds and record["typed_onnx"]["path"] == str(path)
    assert len(set(files.values())) == 1  # 10.x strongly typed parses the very model TensorRT 11 parses
    types = node_types(onnx.load(str(files["11.4.0.106"])))
    half = "bf16" if precision == "bf16" else "fp16"
    assert types["compute"].get(half, 0) >= 3 and types["compute"].get("fp32", 0) == 0
    assert types["quantized"] == ({} if precision in ("fp16", "bf16") else {precision: 2})
