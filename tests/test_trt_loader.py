"""Engine and timing caches heal (issue 9 item 1/6): verified on load, rebuilt with a recorded warning."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import backends.trt_loader as loader
from backends.base import PhaseTimes
from backends.trt_loader import BuilderSettings, BuildOutput, EnginePaths, load_or_build
from backends.trt_plan import plan_build
from harness.store.engine_cache import EngineCacheKey, TimingCacheKey, read_verified, sidecar_path, write_verified

GPU = SimpleNamespace(name="NVIDIA A100", compute_capability=(8, 0))


class Runtime:
    def __init__(self, logger: Any) -> None:
        pass

    def deserialize_cuda_engine(self, data: bytes) -> Any:
        return None if data.startswith(b"GARBAGE") else SimpleNamespace(data=bytes(data))


TRT = SimpleNamespace(Runtime=Runtime)


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    calls: list[bytes | None] = []

    def fake_build(trt: Any, onnx_path: Path, plan: Any, settings: Any, input_shape: Any, *, logger: Any,
                   timing_cache: bytes | None = None, calibrator: Any = None) -> BuildOutput:
        calls.append(timing_cache)
        return BuildOutput(engine=b"ENGINE-%d" % len(calls), timing_cache=b"TIMING-%d" % len(calls))

    monkeypatch.setattr(loader, "build_serialized_engine", fake_build)
    return calls


def _load(tmp_path: Path) -> Any:
    plan = plan_build("fp16", "10.15.1.29", batch_sizes=(1, 8))
    key = EngineCacheKey.for_build("trt-native", "a" * 64, "fp16", None, None, "10.15.1.29", GPU,
                                   BuilderSettings().key_options(plan))
    root = tmp_path / "trt-native"
    paths = EnginePaths.for_key(key, root, TimingCacheKey("10.15.1.29", GPU.name, (8, 0)).path(root / "timing"))
    artifact = SimpleNamespace(input_shape=(3, 8, 8), calibration=None)
    out = load_or_build(TRT, None, plan, BuilderSettings(), artifact, tmp_path / "m.onnx", key, paths, root,
                        PhaseTimes())
    return out, paths


def test_a_cached_engine_is_reused_and_a_damaged_one_rebuilt_with_a_warning(tmp_path: Path, builds: list) -> None:
    first, paths = _load(tmp_path)
    assert first.details["engine_cache"] == "miss" and builds == [None]
    assert sidecar_path(paths.engine).is_file() and sidecar_path(paths.timing).is_file()
    again, _ = _load(tmp_path)
    assert again.details["engine_cache"] == "hit" and again.engine_bytes == b"ENGINE-1" and len(builds) == 1
    assert "cache_warnings" not in again.details

    paths.engine.write_bytes(b"ENGINE")  # truncated
    healed, _ = _load(tmp_path)
    assert healed.details["engine_cache"] == "rebuilt" and healed.engine_bytes == b"ENGINE-2"
    assert "truncated" in healed.details["cache_warnings"][0] and builds[-1] == b"TIMING-1"

    paths.timing.write_bytes(b"TIMING-X")  # same size, other content
    paths.engine.unlink()
    rebuilt, _ = _load(tmp_path)
    assert builds[-1] is None and any("timing cache" in w and "sha256" in w for w in rebuilt.details["cache_warnings"])
    assert read_verified(paths.timing).data == b"TIMING-3"


def test_an_undeserializable_engine_is_rebuilt(tmp_path: Path, builds: list) -> None:
    _, paths = _load(tmp_path)
    write_verified(paths.engine, b"GARBAGE from another TensorRT")
    healed, _ = _load(tmp_path)
    assert healed.details["engine_cache"] == "rebuilt" and healed.engine_bytes == b"ENGINE-2"
    assert "could not deserialize" in healed.details["cache_warnings"][0]
    meta = json.loads(paths.meta.read_text())
    assert meta["engine_bytes"] == len(b"ENGINE-2")


def test_read_verified(tmp_path: Path) -> None:
    path = tmp_path / "x.engine"
    assert read_verified(path).problem is None and not read_verified(path).present
    write_verified(path, b"abc")
    assert read_verified(path).data == b"abc"
    sidecar_path(path).unlink()
    result = read_verified(path)
    assert result.data is None and "no sidecar" in result.problem and not path.exists()
    write_verified(path, b"abc")
    sidecar_path(path).write_text("{")
    assert "unreadable" in read_verified(path).problem
