"""NVIDIA ModelOpt as a referee quantizer: its INT8/FP8 Q/DQ ONNX models from the harness's calibration images.

``calibration: {tool: modelopt}`` hands the same seeded train-split images the harness calibrates with to
``modelopt.onnx.quantization.quantize`` (``quantize_mode`` int8 or fp8, ``calibration_method`` entropy or
max, which the harness calls minmax), and every backend then runs ModelOpt's model where it would run the
harness's. What is fixed here, so the two quantizers differ only in what they decide themselves:

* ``calibration_data_reader``: the harness's streaming reader over those images (without data ModelOpt
  would calibrate on random inputs); ``calibration_eps=["cpu"]``: the same arithmetic on every machine;
* ``high_precision_dtype="fp32"``: the non-quantized layers stay FP32 in the file, as in the harness's
  Q/DQ models (a strongly typed TensorRT build converts both alike to FP16, :mod:`backends.typed_onnx`).

ModelOpt's own choices are kept and recorded: which ops it quantizes (INT8: Conv, Gemm, MatMul, pooling,
Add, ...; FP8: Conv, Gemm, MatMul, leaving the layer that reads the model's input in float), per-channel
weights, per-tensor symmetric activations; its entropy is ONNX Runtime's KL search on a 128-bin histogram
(ModelOpt's patch lets it grow as batches merge) with 128 quantized levels, not TensorRT's 2048-bin search
the harness uses (on tinycnn its thresholds came out 0.75-1.0 of max-abs); its FP8 model is its INT8 model
with each activation scale multiplied by 448/127 (``int8_to_fp8``), so max|x| lands near
127**2/448 = 36 on E4M3's grid where the harness puts it at 448 (measured: ModelOpt's FP8 scales are
(448/127)**2 = 12.44 times the harness's, tensor by tensor, with max calibration).

ModelOpt 0.47 also rewrites the ONNX file it is given (the harness's cached export changed on disk), so it
is handed a copy.

ModelOpt is an optional extra (``pip install 'pq-harness[modelopt]'``); without it ``tool: modelopt`` is a
one-line error. It runs on CPU (ONNX Runtime's CPU EP; its NVML probe only logs that no GPU is there), in a
child process of its own (ModelOpt patches ONNX Runtime's calibrator classes for the whole process).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from calib.ort_base import BatchFactory, as_numpy, count_or_materialize
from harness.store.atomic import atomic_replace
from harness.errors import HarnessError, missing_library
from harness.onnx_export import INPUT_NAME

ModelOptMode = Literal["int8", "fp8"]
MODELOPT_HINT = ("pip install 'pq-harness[modelopt]' (nvidia-modelopt and the parts of its onnx extra that leave "
                 "the installed onnxruntime alone)")
#: The harness's method names -> ModelOpt's.
MODELOPT_METHODS: dict[str, str] = {"entropy": "entropy", "minmax": "max"}
#: What the harness fixes in every ModelOpt call (recorded in the artifact's provenance).
MODELOPT_FIXED: dict[str, Any] = {"calibration_eps": ["cpu"], "high_precision_dtype": "fp32"}


def modelopt_version() -> str | None:
    """The installed nvidia-modelopt version, or None when no ``modelopt`` package is importable. Read from its
    metadata: importing it here would cost seconds, and its quantizer only ever runs in a child process."""
    import importlib.metadata
    import importlib.util

    try:
        if importlib.util.find_spec("modelopt") is None:
            return None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return None
    try:
        return importlib.metadata.version("nvidia-modelopt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def import_modelopt_quantize() -> Any:
    """``modelopt.onnx.quantization.quantize``, or the one-line error saying how to install it."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise missing_library("nvidia-modelopt", "calibration.tool modelopt", MODELOPT_HINT) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a dependency of its onnx extra that fails to load
        raise HarnessError(f"nvidia-modelopt is installed but its ONNX quantizer does not import "
                           f"({type(exc).__name__}: {exc}); {MODELOPT_HINT}") from exc
    return quantize


def modelopt_method(method: str) -> str:
    if method not in MODELOPT_METHODS:
        raise HarnessError(f"calibration method '{method}' is not one ModelOpt offers; use "
                           f"{' or '.join(MODELOPT_METHODS)}")
    return MODELOPT_METHODS[method]


#: Batches served by every reader of this process (ModelOpt may copy the reader it is given).
_SERVED: list[int] = [0]


class _NpyReader:
    """ModelOpt's reader protocol (``get_next``, ``get_first``, ``rewind``) over batches saved as .npy files."""

    def __init__(self, files: list[Path], input_name: str) -> None:
        self.files, self.name, self.position = files, input_name, 0

    def get_next(self) -> dict[str, Any] | None:
        import numpy as np

        if self.position >= len(self.files):
            return None
        batch = np.load(self.files[self.position])
        self.position += 1
        _SERVED[0] += 1
        return {self.name: batch}

    def get_first(self) -> dict[str, Any]:
        import numpy as np

        return {self.name: np.load(self.files[0])}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return len(self.files)


def _worker(job: Path) -> None:
    """Run one ModelOpt quantization described by ``job`` (JSON) and write ``result.json`` beside it.

    A separate process, because ModelOpt patches ONNX Runtime's calibrator classes for the whole process
    (``ort_patching.patch_ort_modules``, never undone): the harness's own calibration afterwards, in the same
    process, would run ModelOpt's versions (its minmax calibrator then fails on the harness's ranges call).
    """
    import json

    spec = json.loads(job.read_text())
    result: dict[str, Any] = {}
    try:
        from onnxruntime.quantization import CalibrationDataReader

        quantize = import_modelopt_quantize()
        logging.getLogger("modelopt").setLevel(logging.ERROR)
        reader_type = type("ModelOptReader", (_NpyReader, CalibrationDataReader), {})
        reader = reader_type([Path(f) for f in spec["files"]], spec["input_name"])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantize(spec["onnx"], calibration_data_reader=reader, output_path=spec["out"], log_level="ERROR",
                     **spec["asked"])
        result = {"ok": True, "seen": _SERVED[0]}
    except Exception as exc:  # noqa: BLE001 - reported to the parent in one line
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:2000]}
    (job.parent / "result.json").write_text(json.dumps(result))


def _has_qdq(path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


def build_modelopt_qdq(fp32_onnx: Path, calib_batches: BatchFactory, out_path: Path, *, mode: ModelOptMode,
                       method: str, num_batches: int | None = None, input_name: str = INPUT_NAME,
                       timeout_s: float = 3600.0) -> dict[str, Any]:
    """ModelOpt's ``mode`` Q/DQ model of ``fp32_onnx`` calibrated on ``calib_batches()``, written atomically to
    ``out_path`` (ModelOpt runs in a child process: see :func:`_worker`); returns what was asked of ModelOpt."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    if mode not in ("int8", "fp8"):
        raise HarnessError(f"ModelOpt quantize mode must be int8 or fp8, got '{mode}'")
    if modelopt_version() is None:
        import_modelopt_quantize()  # raises the one-line reason
    factory, length = count_or_materialize(calib_batches, num_batches)
    if length < 1:
        raise HarnessError("no calibration batches: the calibration set is empty")
    asked = {"quantize_mode": mode, "calibration_method": modelopt_method(method), **MODELOPT_FIXED}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelopt.", dir=out_path.parent) as tmp_name:
        tmp = Path(tmp_name)
        files = []
        for i, batch in enumerate(factory()):
            files.append(str(tmp / f"calib-{i:05d}.npy"))
            np.save(files[-1], as_numpy(batch))
        if len(files) != length:
            raise HarnessError(f"the calibration source gave {len(files)} of {length} batches")
        # ModelOpt 0.47 rewrites the model file it is given (measured: the harness's cached export changed on disk),
        # so it gets a copy of its own.
        model_copy = tmp / "model.onnx"
        shutil.copyfile(fp32_onnx, model_copy)
        job = tmp / "job.json"
        job.write_text(json.dumps({"onnx": str(model_copy), "out": str(tmp / "qdq.onnx"), "files": files,
                                   "input_name": input_name, "asked": asked}))
        root = str(Path(__file__).resolve().parents[1])  # the directory holding the calib package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                   "from calib.modelopt_qdq import _worker; _worker(Path(sys.argv[1]))", str(job)],
                                  capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"ModelOpt did not finish quantising {Path(fp32_onnx).name} in {timeout_s:g} s"
                               ) from None
        result_file = tmp / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {
            "ok": False, "error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
        if not result.get("ok"):
            raise HarnessError(f"ModelOpt could not quantise {Path(fp32_onnx).name} ({mode}, "
                               f"{asked['calibration_method']}): {result.get('error')}")
        if not (tmp / "qdq.onnx").is_file():
            raise HarnessError(f"ModelOpt wrote no model for {Path(fp32_onnx).name}")
        if not _has_qdq(tmp / "qdq.onnx"):  # its rules may leave every node in float (then it never calibrates)
            raise HarnessError(f"ModelOpt quantized no node of {Path(fp32_onnx).name} in {mode} mode: its model "
                               "is the float model, so there is nothing to compare")
        if int(result.get("seen", 0)) < length:
            raise HarnessError(f"ModelOpt read {result.get('seen')} of {length} calibration batches")
        atomic_replace(tmp / "qdq.onnx", out_path)
    return asked


__all__ = ["MODELOPT_FIXED", "MODELOPT_HINT", "MODELOPT_METHODS", "ModelOptMode", "build_modelopt_qdq",
           "import_modelopt_quantize", "modelopt_method", "modelopt_version"]
