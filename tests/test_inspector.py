"""Engine-inspector JSON summaries, TensorRT 10 and 11 shapes (fixtures are synthetic, hand-written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.trt_inspect import (
    UNKNOWN,
    is_reformat_layer,
    normalize_datatype,
    summarize,
    summarize_file,
    tensor_datatype,
)
from harness.errors import HarnessError

DATA = Path(__file__).resolve().parent / "data" / "inspector"
TRT10 = DATA / "resnet_like_trt10.json"
TRT11 = DATA / "resnet_like_trt11.json"


def test_fixtures_are_marked_synthetic() -> None:
    for path in (TRT10, TRT11):
        data = json.loads(path.read_text())
        assert "synthetic" in data["_synthetic_fixture"].lower()
        assert "NOT output of a real TensorRT build" in data["_synthetic_fixture"]


def test_trt10_shape() -> None:
    s = summarize_file(TRT10)
    assert s.schema == "trt10" and s.detailed
    assert s.total_layers == 10
    assert s.layers_per_precision == {"int8": 5, "fp16": 4, "fp32": 1}
    assert sum(s.layers_per_precision.values()) == s.total_layers
    assert s.reformat_count == 3
    assert s.reformat_layers == (
        "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /relu/Relu",
        "Reformatting CopyNode for Input Tensor 0 to /avgpool/GlobalAveragePool",
        "Reformatting CopyNode for Output Tensor 0 to /fc/Gemm",
    )
    assert [t.name for t in s.io_tensors] == ["input", "logits"]
    conv = s.layers[1]
    assert conv.layer_type == "CaskConvolution" and conv.precision == "int8"
    assert conv.tactic is not None and conv.tactic.startswith("sm80_xmma_fprop")
    assert conv.output_formats == ("Thirty-two wide channel vectorized row major Int8 format",)
    reformat = s.layers[5]
    assert reformat.input_types == ("int8",) and reformat.output_types == ("fp16",)  # an INT8 -> FP16 boundary


def test_trt11_shape() -> None:
    s = summarize_file(TRT11)
    assert s.schema == "trt11" and s.detailed
    assert s.total_layers == 8
    assert s.layers_per_precision == {"int8": 5, "fp32": 3}
    assert s.reformat_layers == ("Reformatting CopyNode for Input Tensor 0 to /Flatten + /fc/Gemm",)
    assert [(t.name, t.mode, t.precision) for t in s.io_tensors] == [("input", "Input", "fp32"),
                                                                     ("logits", "Output", "fp32")]
    quant = s.layers[0]
    assert quant.input_types == ("fp32",) and quant.output_types == ("int8",)
    assert quant.output_formats == ("Four wide channel vectorized row major Int8 format (kCHW4)",)


def test_to_dict_is_json_ready() -> None:
    for path in (TRT10, TRT11):
        d = summarize_file(path).to_dict(with_layers=True)
        json.dumps(d)
        assert d["total_layers"] == len(d["layers"])
        assert d["reformat_count"] == len(d["reformat_layers"])
        assert "layers" not in summarize_file(path).to_dict()


def test_both_shapes_give_the_same_answer_for_the_same_tensor() -> None:
    trt10 = {"Name": "t", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}
    trt11 = {"Name": "t", "Format": "Channel major FP16 format where channel % 8 == 0 (kHWC8)", "DataType": "Half"}
    assert tensor_datatype(trt10) == tensor_datatype(trt11) == "fp16"
    # the split DataType wins over what the Format string says
    assert tensor_datatype({"Format": "Row major linear FP32 format (kLINEAR)", "DataType": "Int8"}) == "int8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Row major linear FP32", "fp32"),
        ("Row major linear FP16 format", "fp16"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Two wide channel vectorized row major FP16 format", "fp16"),
        ("Four wide channel vectorized row major Int8 format", "int8"),
        ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
        ("Channel major INT8 format where channel % 32 == 0", "int8"),
        ("Row major linear BF16 format", "bf16"),
        ("Row major linear FP8 format", "fp8"),
        ("Row major linear Int32", "int32"),
        ("Row major linear Int64 format", "int64"),
        ("Row major linear Bool", "bool"),
        ("Float", "fp32"),
        ("Half", "fp16"),
        ("BFloat16", "bf16"),
        ("Int8", "int8"),
        ("UInt8", "uint8"),
        ("FP4", "fp4"),
        ("", UNKNOWN),
        (None, UNKNOWN),
        ("Row major linear format", UNKNOWN),
    ],
)
def test_datatype_spellings(text: str | None, expected: str) -> None:
    assert normalize_datatype(text) == expected


def test_layer_names_only() -> None:
    info = {
        "Layers": [
            "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv",
            "/conv1/Conv + /relu/Relu",
            "/layer1/reformat_output",  # name rule: lower-case "reformat" anywhere
            "/fc/Gemm",
        ],
        "Bindings": ["input", "logits"],
    }
    s = summarize(json.dumps(info))
    assert s.schema == "names-only" and not s.detailed
    assert s.total_layers == 4
    assert s.layers_per_precision == {UNKNOWN: 4}
    assert s.reformat_count == 2
    assert s.reformat_layers == ("Reformatting CopyNode for Input Tensor 0 to /conv1/Conv", "/layer1/reformat_output")
    assert s.notes and "DETAILED" in s.notes[0]


def test_reformat_rule() -> None:
    assert is_reformat_layer("anything", "Reformat")
    assert is_reformat_layer("Reformatting CopyNode for Output Tensor 0 to x", None)
    assert is_reformat_layer("x_REFORMAT_y", None)
    # real TensorRT output: an elided copy node keeps its name, is LayerType NoOp and takes 0 ms
    assert not is_reformat_layer("Reformatting CopyNode for Input Tensor 0 to Conv_37", "NoOp")
    assert not is_reformat_layer("/conv1/Conv", "CaskConvolution")


def test_single_layer_and_bare_list_inputs() -> None:
    layer = json.loads(TRT10.read_text())["Layers"][1]
    one = summarize(layer)  # get_layer_information(i, JSON) returns one object
    assert one.total_layers == 1 and one.layers_per_precision == {"int8": 1}
    bare = summarize(json.loads(TRT11.read_text())["Layers"])
    assert bare.total_layers == 8 and bare.schema == "trt11"


def test_empty_and_bad_input() -> None:
    empty = summarize({"Layers": [], "Bindings": []})
    assert empty.total_layers == 0 and empty.layers_per_precision == {} and empty.reformat_count == 0
    with pytest.raises(HarnessError, match="not JSON"):
        summarize("{not json")
    with pytest.raises(HarnessError):
        summarize({"Layers": [42]})
    with pytest.raises(HarnessError):
        summarize({"Layers": "conv1"})


# ------------------------------------------------------------------------------ precision counts, the int8 flag


def _int8_free(text: str) -> str:
    """The same engine with every INT8 tensor turned into FP16 (what a silent fallback looks like)."""
    return text.replace("Int8", "Half").replace("INT8", "FP16").replace("int8", "fp16")


@pytest.mark.parametrize("path", [TRT10, TRT11], ids=["trt10", "trt11"])
def test_precision_counts_and_the_int8_fallback_flag_for_both_shapes(path: Path) -> None:
    from backends.trt_inspect import engine_summary, int8_fallback, precision_counts

    text = path.read_text()
    summary = summarize(text)
    counts = precision_counts(summary)
    assert counts["int8"] > 0 and counts["reformat"] == summary.reformat_count
    assert sum(counts[k] for k in ("int8", "fp8", "fp16", "bf16", "fp32", "other", "reformat")) == counts["total"]
    assert int8_fallback(summary, "int8") is None and "int8_fallback" not in engine_summary(text, "int8")

    fallback = engine_summary(_int8_free(text), "int8")
    assert fallback["precision_counts"]["int8"] == 0 and fallback["int8_fallback"] is True
    assert "not an INT8 result" in fallback["int8_fallback_warning"]
    assert "int8_fallback" not in engine_summary(_int8_free(text), "fp16")  # only int8 cells are flagged


@pytest.mark.parametrize("path", [TRT10, TRT11], ids=["trt10", "trt11"])
def test_fp8_layers_are_counted_as_fp8_and_an_fp8_free_engine_is_flagged(path: Path) -> None:
    """An FP8 engine: the same layers with their INT8 tensors in FP8 (TensorRT spells the type FP8)."""
    from backends.trt_inspect import engine_summary, precision_counts

    text = path.read_text()
    int8 = precision_counts(summarize(text))
    fp8_text = text.replace("Int8", "FP8").replace("INT8", "FP8").replace("int8", "fp8")
    fp8 = precision_counts(summarize(fp8_text))
    assert fp8["fp8"] == int8["int8"] > 0 and fp8["int8"] == 0 and fp8["other"] == int8["other"]
    assert "int8_fallback" not in engine_summary(fp8_text, "fp8")
    flagged = engine_summary(_int8_free(text), "fp8")  # built for fp8, no FP8 layer: a silent fallback
    assert flagged["int8_fallback"] is True and "not an FP8 result" in flagged["int8_fallback_warning"]


def test_names_only_engines_are_never_flagged() -> None:
    from backends.trt_inspect import int8_fallback

    assert int8_fallback(summarize({"Layers": ["conv1", "fc"]}), "int8") is None
