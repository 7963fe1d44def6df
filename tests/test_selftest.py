"""``harness selftest``: the check list, its order and short-circuit, and its one clear line on a CPU machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.selftest import Check, SelftestWorkspace, _backend_check, default_checks, ort_gpu_not_shipped, run_checks


def test_default_checks_in_order() -> None:
    assert [c.name for c in default_checks()] == [
        "torch CUDA", "NVML", "tensorrt import", "trt-native engine vs torch", "ort-cuda CUDA EP vs torch",
        "ort-trt TensorRT EP vs torch"]


def test_the_first_failure_stops_the_rest() -> None:
    ran: list[str] = []

    def ok(name: str) -> Check:
        return Check(name, lambda ws: ran.append(name) or f"{name} fine")

    def broken(ws: SelftestWorkspace) -> str:
        ran.append("broken")
        raise RuntimeError("the library\nis missing")

    results = run_checks([ok("a"), ok("b"), Check("broken", broken), ok("c"), ok("d")])
    assert ran == ["a", "b", "broken"]
    assert [(r.name, r.status) for r in results] == [
        ("a", "ok"), ("b", "ok"), ("broken", "FAIL"), ("c", "not run"), ("d", "not run")]
    assert results[0].detail == "a fine" and results[2].detail == "the library is missing"  # one line
    assert all(r.status == "ok" for r in run_checks([ok("x"), ok("y")]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_on_a_cpu_machine_it_fails_at_the_first_gpu_check_with_one_line() -> None:
    result = CliRunner().invoke(app, ["selftest"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("FAIL") and "torch CUDA" in lines[0]
    assert "sees no CUDA GPU" in lines[0] and all(line.startswith("not run") for line in lines[1:])
    assert "Traceback" not in result.output
    as_json = CliRunner().invoke(app, ["selftest", "--json"])
    assert as_json.exit_code == 1
    parsed = json.loads(as_json.stdout)
    assert [r["status"] for r in parsed] == ["FAIL"] + ["not run"] * 5


@pytest.mark.slow
def test_a_backend_check_runs_the_real_path_and_compares_with_torch(tmp_path: Path) -> None:
    """The same check on the CPU backend: export, session, provider check, agreement with torch."""
    (result,) = run_checks([Check("ort-cpu vs torch", _backend_check("ort-cpu", "CPUExecutionProvider"))], tmp_path)
    assert result.status == "ok", result.detail
    assert "CPUExecutionProvider" in result.detail and "max abs diff vs torch" in result.detail
    (wrong,) = run_checks([Check("wrong provider", _backend_check("ort-cpu", "CUDAExecutionProvider"))], tmp_path)
    assert wrong.status == "FAIL" and "CUDAExecutionProvider is not active" in wrong.detail


def test_agreement_fails_when_outputs_differ(tmp_path: Path) -> None:
    ws = SelftestWorkspace(tmp_path)
    with torch.inference_mode():
        right = ws.artifact().module(ws.host_batch())
    assert ws.agreement(right).startswith("max abs diff vs torch")
    with pytest.raises(AssertionError, match="disagrees with torch"):
        ws.agreement(right + 1.0)
    with pytest.raises(AssertionError, match="output shape"):
        ws.agreement(right[:1])


# ---------------------------------------------------------------------------------- what the image ships


def test_the_ort_gpu_checks_are_skipped_only_beside_tensorrt_11_without_them(tmp_path: Path) -> None:
    from tests.facts import gpu_facts

    cpu_ort = ("CPUExecutionProvider",)
    trt11 = gpu_facts(tensorrt_version="11.4.0.106", onnxruntime_version="1.32.0", ort_providers=cpu_ort)
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        reason = ort_gpu_not_shipped(provider)(SelftestWorkspace(tmp_path, trt11))
        assert reason and "no PyPI onnxruntime-gpu links TensorRT 11" in reason and "trt11 image" in reason
    # an ONNX Runtime built against TensorRT 11 is checked, like any other
    with_ep = gpu_facts(tensorrt_version="11.4.0.106")
    assert ort_gpu_not_shipped("TensorrtExecutionProvider")(SelftestWorkspace(tmp_path, with_ep)) is None
    # beside TensorRT 10 a missing provider is the check's failure, never a skip
    trt10 = gpu_facts(tensorrt_version="10.8.0.43", onnxruntime_version="1.32.0", ort_providers=cpu_ort)
    assert ort_gpu_not_shipped("CUDAExecutionProvider")(SelftestWorkspace(tmp_path, trt10)) is None


def _gpu_stand_ins(monkeypatch: pytest.MonkeyPatch, trt_version: str, engine_ok: bool = True) -> None:
    """This CPU machine as a GPU image: the strict fake tensorrt of ``trt_version`` (its import and
    version are what the checks and the probe read), the fake NVML with an H100, and stand-ins for the
    two checks only a GPU can run (torch CUDA, the trt-native engine)."""
    import sys

    import harness.selftest as selftest
    from tests.fake_nvml import FakeNvml
    from tests.test_trt_native_logic import FakeTrt

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt(trt_version).module())
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(name="NVIDIA H100 80GB HBM3", cc=(9, 0)))
    monkeypatch.setattr(selftest, "check_torch_cuda", lambda ws: "stand-in: torch sees an H100")

    def engine(ws: SelftestWorkspace) -> str:
        if not engine_ok:
            raise RuntimeError("stand-in: the engine disagrees with torch")
        return "stand-in: engine agrees with torch"

    monkeypatch.setattr(selftest, "check_trt_native", engine)


def test_on_the_trt11_images_facts_selftest_passes_on_its_tensorrt_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trt11 image: TensorRT 11 and the CPU onnxruntime (this machine's). The ORT GPU checks are
    skipped with the reason (from the real probe), the TensorRT checks pass: exit 0."""
    pytest.importorskip("onnxruntime")
    _gpu_stand_ins(monkeypatch, "11.4.0.106")
    result = CliRunner().invoke(app, ["selftest"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "ok", "skipped", "skipped"], result.output
    assert "tensorrt 11.4.0.106" in lines[2] and "NVML answers" in lines[1]
    for line in lines[4:]:
        assert "not shipped here: TensorRT 11.4.0.106: no PyPI onnxruntime-gpu links TensorRT 11" in line
    as_json = json.loads(CliRunner().invoke(app, ["selftest", "--json"]).stdout)
    assert [(r["name"], r["status"]) for r in as_json][4:] == [
        ("ort-cuda CUDA EP vs torch", "skipped"), ("ort-trt TensorRT EP vs torch", "skipped")]


def test_a_failing_tensorrt_check_still_fails_the_trt11_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    _gpu_stand_ins(monkeypatch, "11.4.0.106", engine_ok=False)
    result = CliRunner().invoke(app, ["selftest"])
    assert result.exit_code == 1
    statuses = [line.split()[0] for line in result.output.strip().splitlines()]
    assert statuses == ["ok", "ok", "ok", "FAIL", "not", "not"], result.output


@pytest.mark.slow
def test_beside_tensorrt_10_a_missing_onnxruntime_gpu_fails_the_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The a100 image's facts with the CPU onnxruntime (a broken image): the ORT checks run and fail."""
    pytest.importorskip("onnxruntime")
    _gpu_stand_ins(monkeypatch, "10.4.0")
    result = CliRunner().invoke(app, ["selftest"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "ok", "FAIL", "not"], result.output
    assert "ort-cuda" in lines[4] and "Traceback" not in result.output
