"""bench/gpu_smoke.py plans its backend x precision matrix from the machine facts, and --plan-only runs anywhere."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.facts import gpu_facts

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_smoke.py"


def _smoke():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_smoke"] = module
    spec.loader.exec_module(module)
    return module


def test_the_plan_follows_each_backends_rule() -> None:
    smoke = _smoke()
    a100 = smoke.plan_matrix(gpu_facts())
    assert a100["run"]["trt-native"] == ["fp32", "tf32", "fp16", "bf16", "int8"]
    assert a100["run"]["ort-trt"] == ["tf32", "fp16", "int8"]  # fp32 would be TF32 there: refused
    assert a100["run"]["torch"] == ["fp32", "tf32", "fp16", "bf16"]
    assert a100["models"] == ["tinycnn", "resnet18"]
    assert a100["cells"] == 2 * 2 * sum(len(p) for p in a100["run"].values())
    v100 = smoke.plan_matrix(gpu_facts(gpu_cc=(7, 0), gpu_name="Tesla V100-SXM2-16GB"))
    assert "bf16" not in v100["run"]["torch"] and "compute capability" in v100["skipped"]["torch bf16"]
    no_trt = smoke.plan_matrix(gpu_facts(tensorrt_version=None, libnvinfer=None))
    assert "trt-native" not in no_trt["run"] and "trt-native int8" in no_trt["skipped"]
    overrides = smoke.matrix_overrides("resnet18", a100["run"])
    assert overrides["weights"] == "random" and overrides["datasets"] == ["shapes"]  # no download


def test_plan_only_on_this_machine(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    smoke = _smoke()
    assert smoke.main(["--plan-only", "--out", str(tmp_path)]) == 0
    plan = json.loads((tmp_path / "gpu_smoke_plan.json").read_text())["plan"]
    out = capsys.readouterr().out
    assert plan["run"] and plan["cells"] > 0 and f"{plan['cells']} cells" in out
    for pair, reason in plan["skipped"].items():
        assert reason and pair in out


def test_the_table_has_one_row_per_cell_and_per_skipped_pair() -> None:
    smoke = _smoke()
    report = {
        "plan": {"skipped": {"trt-native int8": "tensorrt is not installed"}},
        "matrix_tinycnn": {"rows": [
            {"backend": "torch", "precision": "fp32", "Batch Size": 1, "Inference Time (ms)": 0.25, "Accuracy": 0.5},
            {"backend": "ort-cuda", "precision": "int8", "Batch Size": 8, "error": "HarnessError: boom"}]},
        "matrix_resnet18": {"error": "Traceback ...\nRuntimeError: CUDA out of memory\n"},
    }
    rows = smoke.matrix_rows(report)
    assert [(r["model"], r["backend"], r["status"]) for r in rows] == [
        ("tinycnn", "torch", "ok"), ("tinycnn", "ort-cuda", "FAIL"), ("resnet18", "*", "FAIL"),
        ("*", "trt-native", "skipped")]
    assert rows[2]["detail"] == "RuntimeError: CUDA out of memory" and rows[1]["detail"] == "HarnessError: boom"
