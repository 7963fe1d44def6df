"""The ONNX Runtime INT8 paths on whichever onnxruntime this interpreter imports.

Run by the whole suite with the installed onnxruntime, and by ``tests/test_ort_matrix.py`` under
every onnxruntime version an image pins (each in a subprocess with that wheel first on the path).
Real ONNX Runtime throughout (CPU provider).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from calib.ort_base import calibration_method, make_reader  # noqa: E402
from calib.ort_qdq import build_qdq_model, node_names, quantize_options  # noqa: E402
from calib.ort_ranges import compute_tensor_ranges  # noqa: E402
from calib.ort_static_quant import quantize_route, quantize_with_ranges  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402
from tests.conftest import REPO  # noqa: E402

SIDE = 16


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = SmallNet().eval()
    return export_onnx(net, (3, SIDE, SIDE), content_hash=model_content_hash(net),
                       cache_dir=tmp_path_factory.mktemp("onnx"), name="small").path


@pytest.fixture(scope="module")
def batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, 3, SIDE, SIDE)).astype(np.float32) for _ in range(3)]


def _initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _nodes(path: Path) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    model = onnx.load(str(path))
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in model.graph.node]


def _routes() -> list[str]:
    """Every route this onnxruntime offers: the one it picks, plus the quantizer route when both exist."""
    picked = quantize_route()
    return [picked] if picked == "qdq-quantizer" else [picked, "qdq-quantizer"]


# -- the Q/DQ model equals quantize_static's own -------------------------------------------------


@pytest.mark.parametrize("route", _routes())
def test_minmax_qdq_model_equals_quantize_static_with_its_own_calibration(
        route: str, fp32_onnx: Path, batches: list[np.ndarray], tmp_path: Path) -> None:
    """The package's minmax ranges, handed to ORT's quantizer by ``route``, give exactly the model that
    ``quantize_static`` writes when it calibrates the same batches itself (ORT's MinMax calibrator)."""
    q = ort.quantization
    options = quantize_options("cpu")
    own = tmp_path / "own.onnx"
    reader = make_reader(lambda: iter(batches), len(batches))
    q.quantize_static(str(fp32_onnx), str(own), reader, calibrate_method=q.CalibrationMethod.MinMax, **options)

    ranges = compute_tensor_ranges(fp32_onnx, lambda: iter(batches), "minmax", num_batches=len(batches),
                                   work_dir=tmp_path, symmetric=False)
    ours = tmp_path / "ours.onnx"
    quantize_with_ranges(fp32_onnx, ours, ranges, calibration_method("minmax"), options, work_dir=tmp_path,
                         route=route)  # type: ignore[arg-type]
    assert _nodes(ours) == _nodes(own)
    theirs, mine = _initializers(own), _initializers(ours)
    assert set(mine) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_array_equal(mine[name], value, err_msg=name)
    assert sum(op == "QuantizeLinear" for op, _, _ in _nodes(ours)) >= 3


def test_every_route_writes_the_same_entropy_model(fp32_onnx: Path, batches: list[np.ndarray],
                                                   tmp_path: Path) -> None:
    routes = _routes()
    if len(routes) < 2:
        pytest.skip(f"onnxruntime {ort.__version__} offers one route only: {routes[0]}")
    ranges = compute_tensor_ranges(fp32_onnx, lambda: iter(batches), "entropy", num_batches=len(batches),
                                   work_dir=tmp_path, symmetric=True)
    written = {}
    for route in routes:
        written[route] = tmp_path / f"{route}.onnx"
        quantize_with_ranges(fp32_onnx, written[route], ranges, calibration_method("entropy"),
                             quantize_options("tensorrt"), work_dir=tmp_path, route=route)  # type: ignore[arg-type]
    first, second = (written[r] for r in routes)
    assert _nodes(first) == _nodes(second)
    a, b = _initializers(first), _initializers(second)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_qdq_model_builds_and_runs_on_this_onnxruntime(fp32_onnx: Path, batches: list[np.ndarray],
                                                      tmp_path: Path) -> None:
    out = build_qdq_model(fp32_onnx, lambda: iter(batches), tmp_path / "qdq.onnx", "entropy",
                          num_batches=len(batches))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got, want = session.run(None, {name: batches[0]})[0], reference.run(None, {name: batches[0]})[0]
    cosine = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.95, cosine


# -- nodes kept in float ------------------------------------------------------------------------


def test_excluded_nodes_stay_float(fp32_onnx: Path, batches: list[np.ndarray], tmp_path: Path) -> None:
    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(convs)
    kept = convs[1]
    outs = {}
    for label, exclude in (("all", ()), ("kept", (kept,))):
        outs[label] = build_qdq_model(fp32_onnx, lambda: iter(batches), tmp_path / f"{label}.onnx", "minmax",
                                      num_batches=len(batches), preprocess=False, exclude_nodes=exclude)

    def int8_weights(path: Path) -> dict[str, bool]:
        """Conv name -> whether its weight comes out of a DequantizeLinear (int8) or stays a float initializer."""
        graph = onnx.load(str(path)).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        return {n.name: made_by.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type == "Conv"}

    assert int8_weights(outs["all"]) == {convs[0]: True, kept: True}
    assert int8_weights(outs["kept"]) == {convs[0]: True, kept: False}
    assert kept in node_names(outs["kept"])


def test_unknown_excluded_node_is_a_clear_error(fp32_onnx: Path, batches: list[np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="exclude_nodes names no node of .*no_such_node"):
        build_qdq_model(fp32_onnx, lambda: iter(batches), tmp_path / "x.onnx", "minmax", num_batches=len(batches),
                        preprocess=False, exclude_nodes=["no_such_node"])
    assert not (tmp_path / "x.onnx").exists()


# -- an onnxruntime without the APIs ------------------------------------------------------------


def _remove_ranges_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this onnxruntime look like one with neither way to take precomputed ranges."""
    # import_module, not ``import ... as``: onnxruntime.quantization's attribute ``quantize`` is a function
    calibrate = importlib.import_module("onnxruntime.quantization.calibrate")
    quantize = importlib.import_module("onnxruntime.quantization.quantize")
    monkeypatch.delattr(calibrate, "save_tensors_data", raising=False)
    monkeypatch.delattr(quantize, "QDQQuantizer")


def test_missing_quantizer_api_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, fp32_onnx: Path,
                                                  batches: list[np.ndarray], tmp_path: Path) -> None:
    _remove_ranges_apis(monkeypatch)
    with pytest.raises(HarnessError) as info:
        build_qdq_model(fp32_onnx, lambda: iter(batches), tmp_path / "x.onnx", "minmax", num_batches=len(batches))
    message = str(info.value)
    assert f"onnxruntime {ort.__version__} has no way to quantise with precomputed ranges" in message
    assert "QDQQuantizer" in message and "onnxruntime>=1.20" in message and "\n" not in message


@pytest.mark.parametrize("module", ["onnxruntime.quantization.calibrate",
                                    "onnxruntime.quantization.CalTableFlatBuffers.TrtTable"])
def test_missing_calibration_module_is_one_clear_error(module: str, monkeypatch: pytest.MonkeyPatch,
                                                       fp32_onnx: Path, batches: list[np.ndarray],
                                                       tmp_path: Path) -> None:
    from calib.ort_table import read_table_entries, write_trt_calibration_table

    table = write_trt_calibration_table(fp32_onnx, lambda: iter(batches), tmp_path, "minmax",
                                        num_batches=len(batches))
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(HarnessError, match=rf"onnxruntime {re.escape(ort.__version__)} has no .*onnxruntime>=1\.20"):
        if module.endswith("TrtTable"):
            read_table_entries(table)
        else:
            compute_tensor_ranges(fp32_onnx, lambda: iter(batches), "minmax", num_batches=len(batches),
                                  work_dir=tmp_path)


@pytest.mark.slow
def test_harness_calib_without_the_api_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                   shared_cache: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    _remove_ranges_apis(monkeypatch)
    result = CliRunner().invoke(app, ["calib", "--model", "tinycnn", "--dataset", "shapes", "--count", "16",
                                      "--method", "minmax", "--cache-dir", str(shared_cache),
                                      "--data-root", str(tmp_path)])
    assert result.exit_code == 2, (result.exception, result.output)  # an ImportError would be exit code 1
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "has no way to quantise with precomputed ranges" in " ".join(result.output.split())


# -- end to end on this onnxruntime -------------------------------------------------------------


def _harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))


@pytest.mark.slow
def test_harness_calib_end_to_end(shared_cache: Path, tmp_path: Path) -> None:
    proc = _harness("calib", "--model", "tinycnn", "--dataset", "shapes", "--count", "32",
                    "--cache-dir", str(shared_cache), "--data-root", str(tmp_path), "--rebuild-calib")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Q/DQ ONNX (cpu)" in text and "Q/DQ ONNX (tensorrt)" in text and "TensorRT EP table" in text
    # the console wraps the provenance line at spaces: join its lines again
    tail = " ".join(proc.stdout[proc.stdout.index("provenance "):].splitlines())
    provenance = json.loads(tail[tail.index("{"):])
    assert provenance["versions"]["onnxruntime"] == ort.__version__


@pytest.mark.slow
def test_ort_cpu_int8_cell_through_the_sweep(shared_cache: Path, tmp_path: Path) -> None:
    from harness.store.results import ResultStore

    out = tmp_path / "out"
    proc = _harness("run", "--model", "tinycnn", "--dataset", "shapes", "--backend", "ort-cpu", "--precision", "int8",
                    "--batch-size", "16", "--warmup", "1", "--iterations", "3", "--repeats", "1",
                    "--max-eval-samples", "64", "--cache-dir", str(shared_cache), "--data-root", str(tmp_path),
                    "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with ResultStore(out / "results.db") as store:
        records = list(store.records())
    assert [(r.identity.backend, r.identity.precision, r.status) for r in records] == [("ort-cpu", "int8", "ok")]
    result = records[0].result
    assert result.artifact_notes["calibration"]["provenance"]["versions"]["onnxruntime"] == ort.__version__
    assert result.accuracy["top1"] > 0.5, result.accuracy
