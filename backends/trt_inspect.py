"""Summaries of TensorRT engine-inspector JSON (``EngineInspector.get_engine_information``).

Two documented shapes are read:

* TensorRT 10: ``{"Layers": [...], "Bindings": ["input", "logits"]}``; each layer's ``Inputs`` and
  ``Outputs`` carry one ``"Format/Datatype"`` string such as ``"Row major linear FP32"`` or
  ``"Channel major FP16 format where channel % 8 == 0"``.
* TensorRT 11: ``"Bindings"`` became ``"I/O Tensors"`` (a list of objects with ``Name``,
  ``IOMode``, ``DataType``, ...) and ``"Format/Datatype"`` was split into ``"Format"`` and
  ``"DataType"`` (NVIDIA, "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x").

An engine with several optimization profiles has one layer graph per profile, listed one after the
other; every name of profile N > 0 ends in `` [profile N]`` (profile 0's have no suffix), as NVIDIA's
trex parser and Polygraphy read them. :func:`summarize` keeps ONE profile's layers (``profile``,
default 0): counting them all would multiply every count by the number of profiles.

With ``ProfilingVerbosity.LAYER_NAMES_ONLY`` the layers are plain strings; they are counted, their
precision is ``"unknown"``, and reformats are recognised by name.

The summary answers the questions of REFERENCE.md section 6: how many layers run at each precision
(by output data type), and how many Reformat layers the engine spends on format/precision changes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

UNKNOWN = "unknown"

#: Canonical precision names for the data-type spellings TensorRT uses in inspector output.
_DTYPE_WORDS: dict[str, str] = {
    "fp32": "fp32", "float": "fp32", "float32": "fp32", "kfloat": "fp32",
    "fp16": "fp16", "half": "fp16", "float16": "fp16", "khalf": "fp16",
    "bf16": "bf16", "bfloat16": "bf16", "kbf16": "bf16",
    "int8": "int8", "kint8": "int8",
    "uint8": "uint8", "kuint8": "uint8",
    "fp8": "fp8", "kfp8": "fp8",
    "int4": "int4", "kint4": "int4",
    "fp4": "fp4", "kfp4": "fp4",
    "int32": "int32", "kint32": "int32",
    "int64": "int64", "kint64": "int64",
    "bool": "bool", "kbool": "bool",
    "e8m0": "e8m0", "ke8m0": "e8m0",
}
_DTYPE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_PROFILE_SUFFIX = re.compile(r"\[profile +(\d+)\]")


def profile_of_name(name: str) -> int:
    """The optimization profile a layer or binding name belongs to (``... [profile 2]`` -> 2; none -> 0)."""
    found = _PROFILE_SUFFIX.search(name)
    return int(found.group(1)) if found else 0


def _entry_name(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry.get("Name", ""))
    return str(entry)


def normalize_datatype(text: str | None) -> str:
    """``"Float"``/``"FP32"`` -> ``"fp32"``, ``"Half"`` -> ``"fp16"``, ...; ``"unknown"`` if none found.

    Also reads TRT 10 ``Format/Datatype`` strings: the first data-type word in them wins
    (``"Thirty-two wide channel vectorized row major Int8 format"`` -> ``"int8"``).
    """
    if not text:
        return UNKNOWN
    whole = text.strip().lower()
    if whole in _DTYPE_WORDS:
        return _DTYPE_WORDS[whole]
    for token in _DTYPE_TOKEN.findall(text):
        hit = _DTYPE_WORDS.get(token.lower())
        if hit is not None:
            return hit
    return UNKNOWN


def tensor_datatype(tensor: Mapping[str, Any] | str) -> str:
    """The data type of one layer input/output entry, in either schema."""
    if not isinstance(tensor, Mapping):
        return UNKNOWN
    for key in ("DataType", "Datatype", "Data Type"):  # TRT 11 split field
        if key in tensor:
            return normalize_datatype(str(tensor[key]))
    for key in ("Format/Datatype", "Format/DataType"):  # TRT 10 combined field
        if key in tensor:
            return normalize_datatype(str(tensor[key]))
    if "Format" in tensor:  # TRT 11 Format strings still name the type ("Row major linear FP32 format")
        return normalize_datatype(str(tensor["Format"]))
    return UNKNOWN


def _tensor_format(tensor: Mapping[str, Any] | str) -> str | None:
    if not isinstance(tensor, Mapping):
        return None
    for key in ("Format", "Format/Datatype", "Format/DataType"):
        if key in tensor:
            return str(tensor[key])
    return None


@dataclass(frozen=True)
class LayerSummary:
    name: str
    layer_type: str | None
    precision: str  # data type of the first output (else first input), or "unknown"
    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()
    tactic: str | None = None

    @property
    def is_reformat(self) -> bool:
        return is_reformat_layer(self.name, self.layer_type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "precision": self.precision,
            "input_types": list(self.input_types),
            "output_types": list(self.output_types),
            "output_formats": list(self.output_formats),
            "tactic": self.tactic,
        }


def is_reformat_layer(name: str, layer_type: str | None) -> bool:
    """LayerType ``Reformat``; by name (``Reformatting CopyNode for ...``) only when the type is unknown
    (names-only engines). A "Reformatting CopyNode" of LayerType ``NoOp`` was elided by TensorRT: it
    runs no kernel (the profiler reports 0 ms for it) and is not a reformat."""
    if layer_type is not None and str(layer_type).strip():
        return str(layer_type).strip().lower() == "reformat"
    return "reformat" in name.lower()


@dataclass(frozen=True)
class IoTensor:
    name: str
    mode: str | None = None  # "Input" / "Output" (TRT 11 only)
    precision: str = UNKNOWN  # TRT 11 only; TRT 10 bindings are bare names

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "precision": self.precision}


@dataclass(frozen=True)
class InspectorSummary:
    schema: str  # "trt10" | "trt11" | "names-only" | "unknown"
    layers: tuple[LayerSummary, ...]
    io_tensors: tuple[IoTensor, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    profile: int = 0  # the optimization profile whose layers these are
    profile_count: int = 1  # profiles found in the inspector output

    @property
    def total_layers(self) -> int:
        return len(self.layers)

    @property
    def layers_per_precision(self) -> dict[str, int]:
        counts = Counter(layer.precision for layer in self.layers)
        return dict(sorted(counts.items()))

    @property
    def reformat_layers(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers if layer.is_reformat)

    @property
    def reformat_count(self) -> int:
        return len(self.reformat_layers)

    @property
    def detailed(self) -> bool:
        """Whether per-layer types were available (ProfilingVerbosity.DETAILED)."""
        return self.schema in ("trt10", "trt11")

    def to_dict(self, with_layers: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "total_layers": self.total_layers,
            "layers_per_precision": self.layers_per_precision,
            "reformat_count": self.reformat_count,
            "reformat_layers": list(self.reformat_layers),
            "io_tensors": [t.to_dict() for t in self.io_tensors],
            "detailed": self.detailed,
            "profile": self.profile,
            "profile_count": self.profile_count,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if with_layers:
            out["layers"] = [layer.to_dict() for layer in self.layers]
        return out


def _layer_from_entry(entry: Any, index: int) -> tuple[LayerSummary, bool]:
    """(summary, detailed?) for one element of ``Layers``."""
    if isinstance(entry, str):
        return LayerSummary(name=entry, layer_type=None, precision=UNKNOWN), False
    if not isinstance(entry, Mapping):
        raise HarnessError(f"engine inspector layer {index} is neither a string nor an object: {entry!r}")
    name = str(entry.get("Name", f"layer {index}"))
    layer_type = entry.get("LayerType")
    inputs = entry.get("Inputs") or []
    outputs = entry.get("Outputs") or []
    in_types = tuple(tensor_datatype(t) for t in inputs)
    out_types = tuple(tensor_datatype(t) for t in outputs)
    out_formats = tuple(f for f in (_tensor_format(t) for t in outputs) if f is not None)
    known_out = [t for t in out_types if t != UNKNOWN]
    known_in = [t for t in in_types if t != UNKNOWN]
    precision = known_out[0] if known_out else (known_in[0] if known_in else UNKNOWN)
    tactic = entry.get("TacticName")
    detailed = bool(inputs or outputs or layer_type)
    return (
        LayerSummary(
            name=name,
            layer_type=str(layer_type) if layer_type is not None else None,
            precision=precision,
            input_types=in_types,
            output_types=out_types,
            output_formats=out_formats,
            tactic=str(tactic) if tactic not in (None, "") else None,
        ),
        detailed,
    )


def _layers_use_split_fields(layers: Sequence[Any]) -> bool:
    for entry in layers:
        if isinstance(entry, Mapping):
            for t in list(entry.get("Inputs") or []) + list(entry.get("Outputs") or []):
                if isinstance(t, Mapping) and "DataType" in t and "Format/Datatype" not in t:
                    return True
    return False


def summarize(info: str | bytes | Mapping[str, Any] | Sequence[Any], profile: int = 0) -> InspectorSummary:
    """Summarise engine-inspector output (a JSON string or the parsed object), either TRT schema, for the
    layers of optimization profile ``profile`` only."""
    data: Any = info
    if isinstance(info, (str, bytes)):
        try:
            data = json.loads(info)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"engine inspector output is not JSON: {exc}") from exc

    if isinstance(data, Mapping) and "Layers" not in data and "Name" in data:
        data = {"Layers": [data]}  # one layer from get_layer_information
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        data = {"Layers": list(data)}
    if not isinstance(data, Mapping):
        raise HarnessError(f"engine inspector output has an unexpected shape: {type(data).__name__}")

    raw_layers = data.get("Layers")
    if raw_layers is None:
        raw_layers = []
    if not isinstance(raw_layers, Sequence) or isinstance(raw_layers, (str, bytes)):
        raise HarnessError("engine inspector output: 'Layers' is not a list")

    found_profiles = {profile_of_name(_entry_name(e)) for e in raw_layers}
    if raw_layers and profile not in found_profiles:
        raise HarnessError(f"engine inspector output has no layers of optimization profile {profile} "
                           f"(it has profiles {sorted(found_profiles)})")
    raw_layers = [e for e in raw_layers if profile_of_name(_entry_name(e)) == profile]

    layers: list[LayerSummary] = []
    any_detailed = False
    for i, entry in enumerate(raw_layers):
        layer, detailed = _layer_from_entry(entry, i)
        layers.append(layer)
        any_detailed = any_detailed or detailed

    io: list[IoTensor] = []
    notes: list[str] = []
    if "I/O Tensors" in data:
        for t in data.get("I/O Tensors") or []:
            if profile_of_name(_entry_name(t)) != profile:
                continue
            if isinstance(t, Mapping):
                io.append(IoTensor(name=str(t.get("Name", "")), mode=t.get("IOMode"),
                                   precision=normalize_datatype(str(t.get("DataType", "")))))
            else:
                io.append(IoTensor(name=str(t)))
        schema = "trt11"
    elif "Bindings" in data:
        io = [IoTensor(name=str(b)) for b in data.get("Bindings") or [] if profile_of_name(str(b)) == profile]
        schema = "trt11" if _layers_use_split_fields(raw_layers) else "trt10"
    else:
        schema = "trt11" if _layers_use_split_fields(raw_layers) else ("trt10" if any_detailed else "unknown")

    if layers and not any_detailed:
        schema = "names-only"
        notes.append("layer names only: build with ProfilingVerbosity.DETAILED for per-layer precision")
    return InspectorSummary(schema=schema, layers=tuple(layers), io_tensors=tuple(io), notes=tuple(notes),
                            profile=profile, profile_count=max(len(found_profiles), 1))


def summarize_file(path: Path) -> InspectorSummary:
    return summarize(Path(path).read_text())


# ------------------------------------------------------------------ precision counts, per-layer time


#: The quantized types, in the order a layer is attributed to them (a layer touching INT8 is INT8).
QUANTIZED_TYPES: tuple[str, ...] = ("int8", "fp8")
#: The precision buckets of :func:`precision_counts` (besides ``other``, ``reformat`` and ``total``).
COUNTED_TYPES: tuple[str, ...] = ("int8", "fp8", "fp16", "bf16", "fp32")


def compute_precision(layer: LayerSummary) -> str:
    """The precision a layer computes in: ``int8`` (``fp8``) when any of its tensors is INT8 (FP8): a
    quantized kernel may write FP16/FP32 with the dequantization fused; else its output precision."""
    for quantized in QUANTIZED_TYPES:
        if quantized in layer.input_types or quantized in layer.output_types:
            return quantized
    return layer.precision


def precision_counts(summary: InspectorSummary) -> dict[str, int]:
    """``{"int8", "fp8", "fp16", "bf16", "fp32", "other", "reformat", "total"}`` layer counts of one engine.

    Reformat layers are counted apart (not in the precision buckets); ``other`` holds every other type
    (int32 shape layers, and ``unknown`` when the engine was built without DETAILED).
    """
    counts = {**dict.fromkeys(COUNTED_TYPES, 0), "other": 0, "reformat": 0, "total": summary.total_layers}
    for layer in summary.layers:
        if layer.is_reformat:
            counts["reformat"] += 1
            continue
        p = compute_precision(layer)
        counts[p if p in COUNTED_TYPES else "other"] += 1
    return counts


def int8_fallback(summary: InspectorSummary, precision: str) -> str | None:
    """A warning when an engine built for int8 (fp8) has no INT8 (FP8) layer: a silent fallback to float."""
    if precision not in QUANTIZED_TYPES or not summary.detailed:
        return None
    if precision_counts(summary)[precision] == 0:
        return (
            f"{precision} engine without any {precision.upper()} layer: TensorRT chose float types for all "
            f"{summary.total_layers} layers; this cell is not an {precision.upper()} result"
        )
    return None


def join_layer_times(times: Mapping[str, Sequence[float]], summary: InspectorSummary | None) -> list[dict[str, Any]]:
    """Rows ``{name, ms, precision, type, reformat}``: mean reported time per layer, with the
    inspector's precision/type where its layer names match TensorRT's profiler names."""
    by_name = {layer.name: layer for layer in summary.layers} if summary is not None else {}
    rows: list[dict[str, Any]] = []
    for name, values in times.items():
        layer = by_name.get(name)
        ms = sum(values) / len(values) if values else 0.0
        rows.append({
            "name": name,
            "ms": ms,
            "precision": compute_precision(layer) if layer is not None else UNKNOWN,
            "type": layer.layer_type if layer is not None else None,
            "reformat": layer.is_reformat if layer is not None else is_reformat_layer(name, None),
        })
    return rows


def engine_summary(text: str, precision: str, profile: int = 0) -> dict[str, Any]:
    """What sessions record about one engine (one optimization profile's layers): the summary, precision
    counts and the int8 flag."""
    summary = summarize(text, profile)
    out = summary.to_dict()
    out["precision_counts"] = precision_counts(summary)
    warning = int8_fallback(summary, precision)
    if warning is not None:
        out["int8_fallback"] = True
        out["int8_fallback_warning"] = warning
    return out


__all__ = ["InspectorSummary", "IoTensor", "LayerSummary", "UNKNOWN", "compute_precision", "engine_summary",
           "int8_fallback", "is_reformat_layer", "join_layer_times", "normalize_datatype", "precision_counts",
           "profile_of_name",
           "summarize", "summarize_file", "tensor_datatype"]
