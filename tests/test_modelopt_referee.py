"""NVIDIA ModelOpt as a referee quantizer (``calibration: {tool: modelopt}``).

Without ModelOpt: the config, the cell keys, the selectors and the one-line error. With it (nvidia-modelopt
importable, e.g. installed with ``pip install --target DIR --no-deps`` and DIR on PYTHONPATH): its INT8 and
FP8 Q/DQ models from the harness's calibration images, and the harness's own calibration untouched after it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, numpy_helper  # noqa: E402

from calib import CalibrationData, CalibrationSet  # noqa: E402
from calib.modelopt_qdq import MODELOPT_HINT, modelopt_version  # noqa: E402
from calib.ort_ranges import compute_tensor_ranges, tensor_thresholds  # noqa: E402
from harness.analysis.compare import compare_records, parse_selector  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.phases import PhaseTimes  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow  # noqa: E402

SIDE = 16
needs_modelopt = pytest.mark.skipif(modelopt_version() is None, reason="nvidia-modelopt's ONNX quantizer is not "
                                                                      "importable here")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 32, 3, padding=1)
        self.c = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CalibrationSet, transforms.Compose, Path]:
    root = tmp_path_factory.mktemp("referee")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(24):
        path = root / "data" / "train" / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(path)
        samples.append((path, i % 2))
    module = Net().eval()
    onnx_path = export_onnx(module, (3, SIDE, SIDE), content_hash=model_content_hash(module), cache_dir=root,
                            name="net").path
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3)])
    return onnx_path, CalibrationSet.select(samples, count=24, seed=0), transform, root


def _source(calib: tuple, tool: str, method: str = "minmax") -> CalibrationData:
    onnx_path, calib_set, transform, root = calib
    return CalibrationData(lambda: onnx_path, calib_set, transform, method, root / "cache", ort_batch_size=8,
                           tool=tool)


# ------------------------------------------------------------------------------ without ModelOpt


def test_config_keys_and_selectors() -> None:
    harness = load_config(None, {"calibration": {"method": "entropy"}})
    assert harness.calibration.tool == "harness" and "tool" not in harness.calibration.identity()  # old keys kept
    referee = load_config(None, {"calibration": {"method": "minmax", "tool": "modelopt"}})
    assert referee.calibration.identity()["tool"] == "modelopt"
    with pytest.raises(HarnessError, match="entropy or minmax"):
        load_config(None, {"calibration": {"method": "percentile", "tool": "modelopt"}})
    with pytest.raises(HarnessError, match="plain int8"):
        load_config(None, {"calibration": {"tool": "modelopt"}, "int8": {"max_accuracy_drop": 0.5}})
    with pytest.raises(HarnessError, match="calibration.tool"):
        load_config(None, {"calibration": {"tool": "tensorrt"}})

    def cell(tool_identity: dict, seed: int) -> CellOutcome:
        ident = CellIdentity(model="m", weights="random", dataset="shapes", dataset_size=None, pruner="none",
                             amount=0.0, prune_options={}, backend="ort-cpu", precision="int8", batch_size=8,
                             calibration={"method": "minmax", "count": 64, "seed": 0, **tool_identity})
        samples = [[int(v) for v in np.random.default_rng(seed + r).normal(2e6, 2e4, 30)] for r in range(5)]
        timing = TimingWindow.from_dict({"definition": "compute", "timer": "perf_counter_ns", "batch_size": 8,
                                         "config": {}, "stats": {"median_ms": 2.0}, "samples_ns": samples})
        return CellOutcome.ok(ident, CellResult(accuracy={"top1": 0.5, "samples": 10}, timings=[timing],
                                                device="cpu", session={"details": {}}))

    ours, theirs = cell({}, 0), cell({"tool": "modelopt"}, 1)
    assert ours.key != theirs.key
    result = compare_records([ours, theirs], parse_selector("calibration.tool=harness"),
                             parse_selector("calibration.tool=modelopt"))
    (row,) = result.to_list()
    assert row["status"] == "paired" and row["baseline"]["key"] == ours.key and row["candidate"]["key"] == theirs.key


def test_without_modelopt_the_cell_fails_in_one_line(calib: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)  # as if not installed
    source = _source(calib, "modelopt")
    recorded = source.provenance
    assert recorded["tool"] == "modelopt" and recorded["calibration"]["algorithm"].startswith("modelopt max")
    assert "tool" not in _source(calib, "harness").provenance  # the harness's provenance keeps its hash
    with pytest.raises(HarnessError) as info:
        source.qdq_onnx("fp8", PhaseTimes())
    assert "nvidia-modelopt" in str(info.value) and MODELOPT_HINT in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(HarnessError, match="int8_mode: explicit"):
        source.ort_trt_table(calib[3] / "table", PhaseTimes())
    with pytest.raises(HarnessError, match="harness's own Q/DQ variants"):
        source.qdq_onnx("cpu", PhaseTimes(), exclude_nodes=["/a/Conv"])


# ------------------------------------------------------------------------------ with ModelOpt


@needs_modelopt
def test_modelopt_writes_int8_and_fp8_qdq_models_from_our_images(calib: tuple) -> None:
    from harness.store.fingerprint import file_hash

    source = _source(calib, "modelopt")
    phases = PhaseTimes()
    export_hash = file_hash(calib[0])
    int8_cpu, int8_trt = source.qdq_onnx("cpu", phases), source.qdq_onnx("tensorrt", phases)
    assert file_hash(calib[0]) == export_hash  # ModelOpt rewrites the file it is given: it gets a copy
    fp8 = source.qdq_onnx("fp8", phases)
    assert int8_cpu == int8_trt != fp8 and phases.seconds["calibrate"] > 0  # one INT8 model for both targets
    assert source.provenance["tool"] == "modelopt" and source.provenance["modelopt"] == modelopt_version()
    sidecar = source.qdq_provenance("fp8")
    assert sidecar.options["quantize_mode"] == "fp8" and sidecar.options["calibration_method"] == "max"
    assert sidecar.options["high_precision_dtype"] == "fp32"

    # its INT8 activations: symmetric per tensor at max|x| / 127 over the same images the harness calibrates on
    thresholds = tensor_thresholds(compute_tensor_ranges(
        source.onnx_path(), source._ort_batches, "minmax", num_batches=source._ort_num_batches(),
        work_dir=calib[3], symmetric=True))  # the harness's calibration runs fine after ModelOpt ran
    model = onnx.load(str(int8_cpu))
    inits = {i.name: i for i in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in thresholds and inits[node.input[1]].dims == []:
            scale = float(numpy_helper.to_array(inits[node.input[1]]))
            assert scale == pytest.approx(thresholds[node.input[0]] / 127, rel=1e-5), node.input[0]
            assert inits[node.input[2]].data_type == TensorProto.INT8
            checked += 1
    assert checked >= 2
    fp8_model = onnx.load(str(fp8))
    zero_points = {i.data_type for i in fp8_model.graph.initializer if i.name.endswith("zero_point")}
    assert zero_points == {TensorProto.FLOAT8E4M3FN}
    assert source.builds == {"qdq-cpu": 1, "qdq-fp8": 1}
    again = _source(calib, "modelopt")
    assert again.qdq_onnx("fp8", PhaseTimes()) == fp8 and again.builds == {}  # reused by provenance
