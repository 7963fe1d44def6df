"""``harness selftest``: the check list, its order and short-circuit, and its one clear line on a CPU machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.selftest import Check, SelftestWorkspace, _backend_check, default_checks, run_checks


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
