"""TensorRT API drift: the names our TensorRT code uses must exist in the TRT 10.x versions we ship.

The symbol lists in tests/data/trt_symbols/ come from the real PyPI ``tensorrt-cu12-bindings`` wheels
(bench/extract_trt_symbols.py): 10.4 (the V100 image), 10.8 (the A100 image), 10.15 (the NGC
TensorRT 26.02 image) and 11.4 (TensorRT 11, where implicit INT8 is gone).

Code checked: the TensorRT modules of backends/ (CHECKED_MODULES) and calib/trt_calibrator.py.
- every attribute chain on the tensorrt module alias (``trt.BuilderFlag.FP16``, ``trt.Logger.WARNING``,
  ``trt.IInt8EntropyCalibrator2``), found with ``ast``;
- every name the module declares it calls on TensorRT objects, in a module-level
  ``TRT_API_USED = ("Builder.create_network", "IBuilderConfig.set_flag", ...)`` tuple and/or in
  ``# trt-api: IExecutionContext.execute_async_v3, ...`` comments. Entries are ``Class.member`` or a
  bare ``member`` (then any class having it counts).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ROOT / "tests" / "data" / "trt_symbols"
CHECKED_MODULES = (
    "backends/trt_api.py", "backends/trt_loader.py", "backends/trt_runner.py", "backends/trt_native.py",
    "backends/ort_trt.py", "calib/trt_calibrator.py",
)

# Names TRT 11 removed (weak typing / implicit quantization), as its migration guide lists them.
REMOVED_IN_11 = (
    "BuilderFlag.INT8",
    "BuilderFlag.FP16",
    "BuilderFlag.BF16",
    "BuilderFlag.FP8",
    "BuilderFlag.INT4",
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
    "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator",
    "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator",
    "IInt8Calibrator",
    "IBuilderConfig.int8_calibrator",
    "IBuilderConfig.set_calibration_profile",
)
# The TensorRT API the harness uses that every 10.x list (and, for the execution side, 11.x) must have.
CORE_10 = (
    "Builder",
    "Builder.create_network",
    "Builder.create_builder_config",
    "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "OnnxParser",
    "OnnxParser.parse",
    "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.set_flag",
    "BuilderFlag.FP16",
    "BuilderFlag.INT8",
    "BuilderFlag.SPARSE_WEIGHTS",
    "IBuilderConfig.int8_calibrator",
    "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.set_calibration_profile",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.profiling_verbosity",
    "ITimingCache.serialize",
    "IOptimizationProfile.set_shape",
    "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator2.get_batch",
    "IInt8EntropyCalibrator2.get_batch_size",
    "IInt8EntropyCalibrator2.read_calibration_cache",
    "IInt8EntropyCalibrator2.write_calibration_cache",
    "Runtime",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.create_engine_inspector",
    "EngineInspector.get_engine_information",
    "EngineInspector.get_layer_information",
    "LayerInformationFormat.JSON",
    "ProfilingVerbosity.DETAILED",
    "TensorIOMode.INPUT",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "Logger",
    "Logger.WARNING",
    "__version__",
)
KEPT_IN_11 = (
    "Builder.create_network",
    "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "IBuilderConfig.set_memory_pool_limit",
    "IOptimizationProfile.set_shape",
    "IExecutionContext.execute_async_v3",
    "IExecutionContext.set_tensor_address",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "BuilderFlag.SPARSE_WEIGHTS",
)


@dataclass
class SymbolList:
    path: Path
    header: dict[str, str]
    names: frozenset[str]
    members: frozenset[str] = field(default=frozenset())
    parents: frozenset[str] = field(default=frozenset())

    @property
    def qualified(self) -> bool:
        return self.header.get("method") == "introspect"

    def has(self, name: str) -> bool:
        if name in self.names:
            return True
        if not self.qualified:  # "strings" lists are unqualified: compare the last component
            return name.rsplit(".", 1)[-1] in self.names
        return False

    def has_member(self, member: str) -> bool:
        return member in self.members or (not self.qualified and member in self.names)


@lru_cache(maxsize=None)
def load(path: Path) -> SymbolList:
    header: dict[str, str] = {}
    names: set[str] = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                header[key.strip()] = value.strip()
        elif line.strip():
            names.add(line.strip())
    members = {n.rsplit(".", 1)[1] for n in names if "." in n}
    parents = {n.rsplit(".", 1)[0] for n in names if "." in n}
    return SymbolList(path, header, frozenset(names), frozenset(members), frozenset(parents))


def _lists(major: int) -> list[SymbolList]:
    return [load(p) for p in sorted(SYMBOLS.glob(f"tensorrt-{major}.*.txt"))]


# ---------------------------------------------------------------------------------- the lists themselves


def test_symbol_lists_present_and_small() -> None:
    files = sorted(SYMBOLS.glob("tensorrt-*.txt"))
    assert {p.name for p in files} >= {"tensorrt-10.4.txt", "tensorrt-10.8.txt", "tensorrt-11.4.txt"}
    for path in files:
        s = load(path)
        assert path.stat().st_size < 300_000, path
        assert re.fullmatch(r"tensorrt_cu1[23]_bindings-[\w.]+-cp\d+-[\w.-]+\.whl", s.header["wheel"]), s.header
        assert re.fullmatch(r"[0-9a-f]{64}", s.header["sha256"])
        assert s.header["version"] in s.header["wheel"]
        assert path.name == "tensorrt-" + ".".join(s.header["version"].split(".")[:2]) + ".txt"
        assert len(s.names) > 1000
        assert all(re.fullmatch(r"[A-Za-z_][\w.]*", n) for n in s.names)


def test_trt10_lists_have_the_api_we_use() -> None:
    lists = _lists(10)
    assert lists
    for s in lists:
        missing = [n for n in CORE_10 if not s.has(n)]
        assert not missing, f"{s.path.name} lacks {missing}"


def test_trt11_list_lacks_what_trt11_removed() -> None:
    lists = _lists(11)
    assert lists
    for s in lists:
        assert not s.has("IInt8EntropyCalibrator2")
        if s.qualified:
            present = [n for n in REMOVED_IN_11 if s.has(n)]
            assert not present, f"{s.path.name} still has {present}"
        kept = [n for n in KEPT_IN_11 if not s.has(n)]
        assert not kept, f"{s.path.name} lacks {kept} (is the extraction broken?)"
    # and the same names are present in every 10.x list, so the difference is real
    for s in _lists(10):
        present = [n for n in REMOVED_IN_11 if s.has(n)]
        assert present == list(REMOVED_IN_11), f"{s.path.name} lacks {set(REMOVED_IN_11) - set(present)}"


# ---------------------------------------------------------------------------------- our code


@dataclass
class TrtUsage:
    chains: set[str]
    declared: list[str]
    has_declaration: bool


def _aliases(tree: ast.AST) -> set[str]:
    names = {"trt"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensorrt":
                    names.add(a.asname or "tensorrt")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            # trt = importlib.import_module("tensorrt")
            call = node.value
            if call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value == "tensorrt":
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
    return names


def _chain(node: ast.Attribute, aliases: set[str]) -> str | None:
    parts: list[str] = []
    cur: ast.expr = node
    while isinstance(cur, ast.Attribute):
        parts.append(cur.attr)
        cur = cur.value
    if isinstance(cur, ast.Name) and cur.id in aliases:
        return ".".join(reversed(parts))
    return None


def scan_module(source: str) -> TrtUsage:
    tree = ast.parse(source)
    aliases = _aliases(tree)
    chains: set[str] = set()
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _chain(node, aliases)
            if chain is not None:
                chains.add(chain)
                sub = node.value
                while isinstance(sub, ast.Attribute):  # don't re-add the prefixes of this chain
                    inner.add(id(sub))
                    sub = sub.value
        elif isinstance(node, ast.ImportFrom) and node.module == "tensorrt":
            chains.update(a.name for a in node.names if a.name != "*")
    # the shortest chains are prefixes of longer ones; keep only maximal chains
    chains = {c for c in chains if not any(o != c and o.startswith(c + ".") for o in chains)}

    declared: list[str] = []
    has_declaration = False
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
            value = node.value
        if "TRT_API_USED" in targets and value is not None:
            has_declaration = True
            declared.extend(str(x) for x in ast.literal_eval(value))
    for m in re.finditer(r"#\s*trt-api:\s*(.+)$", source, re.M):
        has_declaration = True
        declared.extend(x.strip() for x in m.group(1).split(",") if x.strip())
    return TrtUsage(chains, declared, has_declaration)


def _chain_ok(chain: str, s: SymbolList) -> bool:
    parts = chain.split(".")
    # check prefixes while they name classes/enums in the list (instance attributes stop the walk)
    for k in range(1, len(parts) + 1):
        prefix = ".".join(parts[:k])
        if not s.has(prefix):
            return False
        if prefix not in s.parents:
            return True
    return True


def _declared_ok(name: str, s: SymbolList) -> bool:
    return s.has(name) if "." in name else s.has_member(name) or s.has(name)


def test_scanner_on_a_sample() -> None:
    sample = '''
import tensorrt as trt
TRT_API_USED = ("Builder.create_network", "IBuilderConfig.set_flag", "execute_async_v3")
# trt-api: Runtime.deserialize_cuda_engine, IExecutionContext.set_input_shape
class Calib(trt.IInt8EntropyCalibrator2):
    pass
def build(logger):
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    sev = trt.ILogger.Severity.ERROR
    size = trt.DataType.FLOAT.itemsize
    return trt.Logger(trt.Logger.WARNING)
'''
    usage = scan_module(sample)
    assert usage.chains == {
        "IInt8EntropyCalibrator2",
        "Builder",
        "BuilderFlag.FP16",
        "MemoryPoolType.WORKSPACE",
        "ILogger.Severity.ERROR",
        "DataType.FLOAT.itemsize",
        "Logger.WARNING",
    }
    assert usage.has_declaration
    assert usage.declared == [
        "Builder.create_network",
        "IBuilderConfig.set_flag",
        "execute_async_v3",
        "Runtime.deserialize_cuda_engine",
        "IExecutionContext.set_input_shape",
    ]
    s10 = _lists(10)[0]
    assert all(_chain_ok(c, s10) for c in usage.chains)
    assert all(_declared_ok(n, s10) for n in usage.declared)
    s11 = _lists(11)[0]
    assert not _chain_ok("BuilderFlag.FP16", s11) and not _chain_ok("IInt8EntropyCalibrator2", s11)
    assert not _chain_ok("BuilderFlag.NOT_A_FLAG", s10)
    assert not _declared_ok("IBuilderConfig.set_flags", s10)


@pytest.mark.parametrize("relpath", CHECKED_MODULES)
def test_our_trt_code_uses_only_trt10_names(relpath: str) -> None:
    path = ROOT / relpath
    if not path.exists():
        pytest.skip(f"{relpath} does not exist yet")
    usage = scan_module(path.read_text())
    assert usage.chains, f"{relpath}: no attribute of the tensorrt module found (import tensorrt as trt?)"
    assert usage.has_declaration, (
        f"{relpath}: declare the TensorRT methods/attributes it calls on TRT objects in a module-level "
        'TRT_API_USED = ("Builder.create_network", ...) tuple (or # trt-api: ... comments)'
    )
    problems: list[str] = []
    for s in _lists(10):
        version = s.header["version"]
        problems += [f"trt.{c} (TRT {version})" for c in sorted(usage.chains) if not _chain_ok(c, s)]
        problems += [f"{n} (TRT {version})" for n in usage.declared if not _declared_ok(n, s)]
    assert not problems, f"{relpath} uses names missing from TensorRT 10.x: {problems}"


# ---------------------------------------------------------------------------------- the extractor


def _extractor():  # noqa: ANN202 - a module loaded from a path
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract_trt_symbols", ROOT / "bench" / "extract_trt_symbols.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_extractor_strings_fallback_and_elf_reader() -> None:
    ex = _extractor()
    blob = b"\x00\x01BuilderFlag\x00set_memory_pool_limit\x00_ZN8nvinfer1\x00two words\x00ab\x00GLIBC_2.2\x00"
    assert ex.extract_strings(blob) == ["BuilderFlag", "set_memory_pool_limit"]
    import _ctypes

    data = Path(_ctypes.__file__).read_bytes()
    if data[:4] != b"\x7fELF":  # pragma: no cover - non-Linux
        pytest.skip("not an ELF system")
    needed, undefined = ex.elf_dynamic_info(data)
    assert isinstance(needed, list)
    assert "PyLong_FromLong" in undefined or any(u.startswith("Py") for u in undefined)
