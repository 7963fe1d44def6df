"""harness.config: defaults, YAML loading, strict validation with key paths, overrides and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import BACKEND_NAMES
from harness.config import SweepConfig, load_config
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parent.parent
_ENV = ("HARNESS_DATA_ROOT", "HARNESS_CACHE_DIR", "HARNESS_OUT_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(HarnessError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message  # the CLI prints it on one line
    return message


# --------------------------------------------------------------------------- defaults and loading


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, SweepConfig)
    assert cfg.models == ["tinycnn"]
    assert cfg.datasets == ["shapes"]
    assert cfg.backends == {"torch": ["fp32"]}
    assert cfg.pairs() == [("torch", "fp32")]
    assert cfg.batch_sizes == [1, 32]
    assert (cfg.timing.warmup, cfg.timing.iterations, cfg.timing.repeats) == (10, 50, 3)
    assert cfg.timing.definitions == ["compute", "e2e"]
    assert cfg.pruners == []
    assert cfg.data_root == Path("data")
    assert cfg.cache_dir == Path(".harness-cache")
    assert cfg.out_dir == Path("results")


def test_yaml_loading(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, """
models: [resnet18, mobilenet_v2]
weights: random
datasets: [imagenette]
batch_sizes: [32, 1, 8, 8]
backends:
  torch: [fp32]
  ort-cpu: [fp32, int8]
pruners:
  - {method: l1, amounts: [0.0, 0.5]}
  - {method: ln-structured, n: 2, dim: 0, amounts: [0.25]}
timing: {warmup: 2, iterations: 7, repeats: 1, definitions: [e2e]}
calibration: {method: minmax, count: 64}
data_root: /datasets
"""))
    assert cfg.models == ["resnet18", "mobilenet_v2"]
    assert cfg.weights == "random"
    assert cfg.batch_sizes == [1, 8, 32]  # sorted, deduplicated
    assert cfg.pairs() == [("torch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8")]
    assert [p.method for p in cfg.pruners] == ["l1", "ln-structured"]
    assert cfg.pruners[0].amounts == [0.0, 0.5]
    assert (cfg.pruners[1].options.n, cfg.pruners[1].options.dim) == (2, 0)
    assert (cfg.timing.warmup, cfg.timing.iterations, cfg.timing.repeats) == (2, 7, 1)
    assert cfg.timing.definitions == ["e2e"]
    assert cfg.calibration.method == "minmax" and cfg.calibration.count == 64
    assert cfg.data_root == Path("/datasets")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "# nothing\n")) == load_config(None)


def test_backend_list_form_means_fp32_each(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "backends: [torch, ort-cpu]\n"))
    assert cfg.backends == {"torch": ["fp32"], "ort-cpu": ["fp32"]}
    assert cfg.pairs() == [("torch", "fp32"), ("ort-cpu", "fp32")]


# --------------------------------------------------------------------------- rejection


def test_unknown_top_level_key_rejected(tmp_path: Path) -> None:
    message = _error(tmp_path, "models: [tinycnn]\nbatchsizes: [1]\n")
    assert "batchsizes" in message
    assert "unknown key" in message


def test_unknown_nested_key_rejected_with_path(tmp_path: Path) -> None:
    message = _error(tmp_path, "timing:\n  warmpu: 5\n")
    assert "timing.warmpu" in message
    assert "unknown key" in message


def test_unknown_key_inside_a_pruner_rejected_with_path(tmp_path: Path) -> None:
    message = _error(tmp_path, "pruners:\n  - {method: l1, amount: [0.5]}\n")
    assert "pruners.0.amount" in message


def test_bad_backend_name_lists_allowed_values(tmp_path: Path) -> None:
    message = _error(tmp_path, "backends:\n  torchh: [fp32]\n")
    assert "torchh" in message
    for name in BACKEND_NAMES:
        assert name in message, name


def test_bad_backend_name_in_list_form(tmp_path: Path) -> None:
    message = _error(tmp_path, "backends: [torch, onnxruntime]\n")
    assert "onnxruntime" in message
    assert "ort-cpu" in message


@pytest.mark.parametrize(("backend", "precision"), [("torch", "int8"), ("ort-cpu", "fp16"), ("ort-cpu", "bf16")])
def test_precision_the_backend_cannot_run_names_the_backend(tmp_path: Path, backend: str, precision: str) -> None:
    message = _error(tmp_path, f"backends:\n  {backend}: [fp32, {precision}]\n")
    assert f"backends.{backend}" in message
    assert precision in message


def test_unknown_precision_rejected(tmp_path: Path) -> None:
    message = _error(tmp_path, "backends:\n  torch: [fp8]\n")
    assert "backends.torch" in message
    assert "fp8" in message or "fp32" in message


def test_backend_without_precisions_rejected(tmp_path: Path) -> None:
    message = _error(tmp_path, "backends:\n  torch: []\n")
    assert "backends.torch" in message


@pytest.mark.parametrize("amount", [1.0, 1.5, -0.1])
def test_amounts_outside_unit_interval_rejected(tmp_path: Path, amount: float) -> None:
    message = _error(tmp_path, f"pruners:\n  - {{method: l1, amounts: [0.1, {amount}]}}\n")
    assert "pruners.0.amounts" in message
    assert str(amount) in message


def test_amount_zero_accepted(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "pruners:\n  - {method: random, amounts: [0.0, 0.99]}\n"))
    assert cfg.pruners[0].amounts == [0.0, 0.99]


@pytest.mark.parametrize(("text", "path"), [
    ("batch_sizes: [0, 8]\n", "batch_sizes"),
    ("timing: {iterations: 0}\n", "timing.iterations"),
    ("weights: imagenet\n", "weights"),
    ("models: []\n", "models"),
])
def test_bad_values_name_their_key(tmp_path: Path, text: str, path: str) -> None:
    assert path in _error(tmp_path, text)


# --------------------------------------------------------------------------- overrides and environment


def test_overrides_win_over_the_file_and_none_is_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, "models: [resnet18]\nbatch_sizes: [1, 2]\nweights: random\n")
    cfg = load_config(path, {"batch_sizes": [64], "models": None, "out_dir": "elsewhere"})
    assert cfg.batch_sizes == [64]
    assert cfg.models == ["resnet18"]  # None override leaves the file's value
    assert cfg.weights == "random"
    assert cfg.out_dir == Path("elsewhere")


def test_overrides_are_validated(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="backends"):
        load_config(None, {"backends": {"torch": ["int8"]}})


def test_env_data_root_applies_only_when_file_does_not_set_it(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_ROOT", str(tmp_path / "from-env"))
    assert load_config(None).data_root == tmp_path / "from-env"
    assert load_config(_write(tmp_path, "models: [tinycnn]\n")).data_root == tmp_path / "from-env"
    assert load_config(_write(tmp_path, "data_root: from-file\n")).data_root == Path("from-file")
    # a flag beats both
    assert load_config(_write(tmp_path, "data_root: from-file\n"),
                       {"data_root": "from-flag"}).data_root == Path("from-flag")


def test_env_cache_and_out_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_OUT_DIR", str(tmp_path / "out"))
    cfg = load_config(None)
    assert cfg.cache_dir == tmp_path / "cache"
    assert cfg.out_dir == tmp_path / "out"


# --------------------------------------------------------------------------- file problems


def test_malformed_yaml_is_a_harness_error(tmp_path: Path) -> None:
    message = _error(tmp_path, "models: [resnet18, alexnet\nbatch_sizes: [1]\n")
    assert "YAML" in message


def test_non_mapping_yaml_is_a_harness_error(tmp_path: Path) -> None:
    assert "mapping" in _error(tmp_path, "- resnet18\n- alexnet\n")


def test_missing_file_is_a_harness_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(HarnessError, match="does not exist"):
        load_config(missing)


# --------------------------------------------------------------------------- shipped configs


def test_demo_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.pairs()
    assert all(b in BACKEND_NAMES for b, _ in cfg.pairs())


def test_thesis_config_loads() -> None:
    path = REPO / "configs" / "thesis.yaml"
    if not path.exists():
        pytest.skip("configs/thesis.yaml is not part of this checkout")
    cfg = load_config(path)
    assert len(cfg.models) >= 9
    assert set(cfg.datasets) == {"imagenette", "imagewoof"}
    assert cfg.pruners


# --------------------------------------------------------------------------- backend options and pruning steps


@pytest.mark.parametrize(("text", "option", "allowed"), [
    ("backend_options:\n  torch: {chanels_last: true}\n", "chanels_last", ("device", "channels_last", "compile")),
    ("backend_options:\n  ort-cpu: {thread: 2}\n", "thread", ("threads",)),
])
def test_backend_option_typo_names_the_option_and_the_allowed_ones(tmp_path: Path, text: str, option: str,
                                                                   allowed: tuple[str, ...]) -> None:
    message = _error(tmp_path, text)
    assert f"unknown option '{option}'" in message and "backend_options." in message
    for name in allowed:
        assert name in message


def test_backend_option_bad_value_names_the_option(tmp_path: Path) -> None:
    assert "threads" in _error(tmp_path, "backend_options:\n  ort-cpu: {threads: -2}\n")


def test_valid_backend_options_accepted(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "backend_options:\n  ort-cpu: {threads: 2}\n  torch: {device: cpu}\n"))
    assert cfg.backend_options == {"ort-cpu": {"threads": 2}, "torch": {"device": "cpu"}}


def test_backend_names_come_from_the_registry() -> None:
    from typing import get_args

    from harness.config import BackendName

    assert get_args(BackendName) == BACKEND_NAMES


def test_prune_specs_expand_amounts_into_the_one_pruner_type(tmp_path: Path) -> None:
    from harness.compression import PruneSpec
    from harness.config import prune_specs

    cfg = load_config(_write(tmp_path, "pruners:\n  - {method: l1, amounts: [0.0, 0.5]}\n"
                                       "  - {method: removal, amounts: [0.3], importance: taylor}\n"
                                       "  - {method: l1, amounts: [0.5]}\n"))
    specs = prune_specs(cfg.pruners)
    assert all(type(s) is PruneSpec for s in specs)
    assert [(s.method, s.amount) for s in specs] == [("none", 0.0), ("l1", 0.5), ("removal", 0.3)]
    assert specs[2].importance == "taylor"
