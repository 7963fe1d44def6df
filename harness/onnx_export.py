"""ONNX export: opset >= 17, dynamic batch axis, named input/output, cached by content.

Every export is checked against PyTorch on the same input with ONNX Runtime's
CPU provider; the max absolute difference is stored beside the file and a
model whose outputs disagree beyond tolerance is rejected.

The cached file heals (:mod:`harness.store.cache_files`): a truncated, garbled or
sidecar-less export is exported again with a one-line note (``OnnxExport.rebuilt``,
and ``on_rebuild`` or a ``CacheRebuiltWarning``), never a protobuf parse error.
"""

from __future__ import annotations

import copy
import inspect
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError, missing_library
from harness.store import cache_files

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
EXPORT_FORMAT_VERSION = 2  # 2: checksum sidecar (harness.store.cache_files)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    opset: int
    max_abs_diff: float
    content_hash: str
    #: The one-line note when a damaged cached export was rebuilt; None otherwise.
    rebuilt: str | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def export_onnx(
    module: torch.nn.Module,
    input_shape: tuple[int, int, int],
    *,
    content_hash: str,
    cache_dir: Path,
    name: str,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-3,
    on_rebuild: cache_files.OnRebuild | None = None,
) -> OnnxExport:
    """Export (or reuse the cached export of) ``module`` and verify it.

    A cached export is reused only when its checksum sidecar matches; a damaged one is
    exported again and the note goes to ``on_rebuild`` (else a ``CacheRebuiltWarning``).
    """
    if opset < 17:
        raise HarnessError(f"ONNX opset {opset} is too old; use opset 17 or newer")
    out_dir = cache_dir / "onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{_safe(name)}-{content_hash[:16]}-op{opset}-v{EXPORT_FORMAT_VERSION}"
    path = out_dir / f"{stem}.onnx"
    reason = cache_files.damaged(path)
    if reason is None and path.exists():
        meta = cache_files.read_meta(path)
        if meta.get("content_hash") == content_hash and "max_abs_diff" in meta:
            return OnnxExport(path, opset, float(meta["max_abs_diff"]), content_hash)
        reason = "its sidecar records another model"
    note = None
    if reason is not None:
        note = cache_files.rebuilt_note("ONNX export", path, reason)
        cache_files.discard(path)
    first = next(module.parameters(), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        module = copy.deepcopy(module).cpu().float()  # never move or cast the caller's module
    module.eval()
    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                **torchscript_exporter_kwargs(torch.onnx.export),
            )
        max_diff = _max_abs_diff(module, tmp, example)
        if not max_diff <= tolerance * max(1.0, _scale(module, example)):
            raise HarnessError(
                f"ONNX export of {name} disagrees with PyTorch (max abs diff {max_diff:.3g}); "
                "the model uses an operation the exporter translates wrongly"
            )
        cache_files.commit(tmp, path, {"content_hash": content_hash, "opset": opset, "max_abs_diff": max_diff,
                                       "torch": torch.__version__})
    finally:
        tmp.unlink(missing_ok=True)
    if note is not None:
        cache_files.report_rebuild(note, on_rebuild)
    return OnnxExport(path, opset, max_diff, content_hash, rebuilt=note)


def torchscript_exporter_kwargs(export: Callable[..., Any]) -> dict[str, Any]:
    """``{"dynamo": False}`` when ``export`` has that parameter, else nothing.

    torch 2.5 added ``dynamo`` to ``torch.onnx.export`` and 2.9 made ``True`` its default, so newer
    torch needs ``False`` to keep the TorchScript exporter (``dynamic_axes``); torch before 2.5, and
    pre-release builds such as NGC 24.09's 2.5.0a0 taken before the parameter landed, reject it.
    """
    try:
        parameters = inspect.signature(export).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass only what every version takes
        return {}
    return {"dynamo": False} if "dynamo" in parameters else {}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def _scale(module: torch.nn.Module, example: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(module(example).abs().max())


def _max_abs_diff(module: torch.nn.Module, path: Path, example: torch.Tensor) -> float:
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_library("onnxruntime", "checking the ONNX export", "pip install 'pq-harness[ort-cpu]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
    with torch.inference_mode():
        torch_out = module(example).numpy()
    return float(abs(onnx_out - torch_out).max())
