"""The engine-inspector and profiler JSON written by real TensorRT builds, read by backends.trt_inspect.

Expectations are computed here from the raw JSON with deliberately plain rules (not the module's
code), and a few numbers were counted by hand from the files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from backends.trt_inspect import (
    engine_summary,
    int8_fallback,
    join_layer_times,
    precision_counts,
    profile_of_name,
    summarize,
)
from harness.errors import HarnessError

SAMPLES = Path(__file__).resolve().parent / "data" / "trt_samples"
NAMES = sorted(p.name[: -len(".graph.json")] for p in SAMPLES.glob("*.graph.json"))
QAT = [n for n in NAMES if "qat" in n]
FLOAT = [n for n in NAMES if "qat" not in n]


def graph(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.graph.json").read_text())


def profile(name: str) -> list[dict[str, Any]]:
    return json.loads((SAMPLES / f"{name}.profile.json").read_text())


def expected_counts(raw: dict[str, Any]) -> dict[str, int]:
    """Plain reading of the raw layers: a Reformat-typed layer is a reformat; a layer with any Int8 (FP8)
    tensor computes in INT8 (FP8); otherwise the type word of its first output."""
    counts = {"int8": 0, "fp8": 0, "fp16": 0, "bf16": 0, "fp32": 0, "other": 0, "reformat": 0,
              "total": len(raw["Layers"])}
    for layer in raw["Layers"]:
        if layer["LayerType"] == "Reformat":
            counts["reformat"] += 1
            continue
        formats = [t["Format/Datatype"] for t in layer["Inputs"] + layer["Outputs"]]
        first = layer["Outputs"][0]["Format/Datatype"]
        if any("Int8" in f for f in formats):
            counts["int8"] += 1
        elif any("FP8" in f for f in formats):
            counts["fp8"] += 1
        else:
            word = next((w for w in ("FP16", "BF16", "FP32") if w in first), None)
            counts[word.lower() if word else "other"] += 1
    return counts


def test_all_ten_samples_are_here() -> None:
    assert len(NAMES) == 10 and len(QAT) == 6 and len(FLOAT) == 4
    for name in NAMES:
        assert (SAMPLES / f"{name}.profile.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_precision_and_reformat_counts_match_the_raw_json(name: str) -> None:
    raw = graph(name)
    summary = summarize(json.dumps(raw))
    assert summary.schema == "trt10" and summary.detailed and summary.profile_count == 1
    assert [t.name for t in summary.io_tensors] == raw["Bindings"]
    assert precision_counts(summary) == expected_counts(raw)


def test_hand_counted_numbers() -> None:
    """Counted by hand from the files."""
    fp32 = precision_counts(summarize(json.dumps(graph("resnet-a100-fp32"))))
    # 32 layers: one real Reformat (before MaxPool_2); seven "Reformatting CopyNode" layers are NoOp (0 ms)
    assert fp32 == {"int8": 0, "fp8": 0, "fp16": 0, "bf16": 0, "fp32": 31, "other": 0, "reformat": 1, "total": 32}
    qat = precision_counts(summarize(json.dumps(graph("resnet-a100-qat"))))
    assert qat["total"] == 37 and qat["reformat"] == 12 and qat["int8"] > 0  # 12 Q/DQ + reformat layers
    fp16 = precision_counts(summarize(json.dumps(graph("resnet-a100-fp16"))))
    assert fp16["int8"] == 0 and fp16["fp16"] > 0 and fp16["reformat"] == 2


@pytest.mark.parametrize("name", FLOAT)
def test_float_engines_have_no_int8_layer(name: str) -> None:
    summary = summarize(json.dumps(graph(name)))
    assert precision_counts(summary)["int8"] == 0
    assert int8_fallback(summary, "int8") is not None  # had this been an int8 build: a silent fallback
    assert int8_fallback(summary, "fp32") is None and int8_fallback(summary, "fp16") is None
    assert "int8_fallback" not in engine_summary(json.dumps(graph(name)), "fp16")


@pytest.mark.parametrize("name", QAT)
def test_qat_engines_have_int8_layers_and_no_fallback_flag(name: str) -> None:
    summary = summarize(json.dumps(graph(name)))
    assert precision_counts(summary)["int8"] > 0
    assert int8_fallback(summary, "int8") is None
    assert "int8_fallback" not in engine_summary(json.dumps(graph(name)), "int8")


@pytest.mark.parametrize("name", NAMES)
def test_profiler_times_join_every_layer(name: str) -> None:
    raw, records = graph(name), profile(name)
    layer_records = [r for r in records if "name" in r]
    assert records[0] == {"count": records[0]["count"]} and len(layer_records) == len(records) - 1
    summary = summarize(json.dumps(raw))
    rows = join_layer_times({r["name"]: [r["averageMs"]] for r in layer_records}, summary)
    by_layer = {layer["Name"]: layer for layer in raw["Layers"]}
    assert len(rows) == len(layer_records)
    for row, record in zip(rows, layer_records):
        layer = by_layer[record["name"]]  # every profiler name is an inspector layer name
        assert row["name"] == record["name"] and row["ms"] == pytest.approx(record["averageMs"])
        assert row["type"] == layer["LayerType"]
        assert row["reformat"] == (layer["LayerType"] == "Reformat")
        assert row["precision"] != "unknown"
        if layer["LayerType"] == "NoOp":
            assert row["ms"] == 0  # an elided copy node costs nothing
    assert sum(r["ms"] for r in rows) == pytest.approx(sum(r["averageMs"] for r in layer_records))


# ------------------------------------------------------------------ several optimization profiles


def with_profiles(raw: dict[str, Any], batches: list[int]) -> dict[str, Any]:
    """The inspector JSON of the same engine built with one profile per batch size: each profile has its
    own copy of the layer graph, listed in profile order; every layer, tensor and binding name of profile
    N > 0 carries the suffix `` [profile N]``; profile 0's names have none."""
    def suffixed(name: str, n: int) -> str:
        return name if n == 0 else f"{name} [profile {n}]"

    layers, bindings = [], []
    for n, batch in enumerate(batches):
        for layer in raw["Layers"]:
            copy_ = copy.deepcopy(layer)
            copy_["Name"] = suffixed(layer["Name"], n)
            for tensor in copy_["Inputs"] + copy_["Outputs"]:
                tensor["Name"] = suffixed(tensor["Name"], n)
                tensor["Dimensions"] = [batch, *tensor["Dimensions"][1:]]
            layers.append(copy_)
        bindings += [suffixed(b, n) for b in raw["Bindings"]]
    return {"Layers": layers, "Bindings": bindings}


@pytest.mark.parametrize("name", ["resnet-a100-qat", "tf-resnet-rtx3090-fp16"])
def test_several_profiles_count_one_profile(name: str) -> None:
    raw = graph(name)
    multi = json.dumps(with_profiles(raw, [1, 8, 32]))
    single = precision_counts(summarize(json.dumps(raw)))
    for n in range(3):
        summary = summarize(multi, profile=n)
        assert summary.profile == n and summary.profile_count == 3
        assert precision_counts(summary) == single  # not three times the layers
        assert len(summary.io_tensors) == len(raw["Bindings"])
        assert all(profile_of_name(layer.name) == n for layer in summary.layers)
    assert engine_summary(multi, "int8")["total_layers"] == len(raw["Layers"])
    with pytest.raises(HarnessError, match="profile 5"):
        summarize(multi, profile=5)


def test_profile_suffix_rule() -> None:
    assert profile_of_name("Conv_0 + Relu_1") == 0
    assert profile_of_name("Conv_0 + Relu_1 [profile 2]") == 2
    assert profile_of_name("Reformatting CopyNode for Input Tensor 0 to Conv_37 [profile 11]") == 11
