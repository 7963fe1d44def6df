"""Typed sweep configuration (YAML), validated with pydantic.

Unknown keys and bad values are rejected with the key's path and the allowed
values. CLI flags override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError

BackendName = Literal["torch", "ort-cpu", "ort-cuda", "ort-trt", "trt-native"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
PruneMethod = Literal["none", "random", "l1", "ln-structured", "l1-global", "removal", "2:4"]
Importance = Literal["random", "l1", "l2", "taylor", "bn-scale"]
TimingDefinition = Literal["compute", "e2e"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrunerConfig(_Strict):
    method: PruneMethod
    amounts: list[float] = Field(default_factory=lambda: [0.0])
    n: float = 1
    dim: Literal[0, 1] = 0
    importance: Importance = "l1"
    round_to: int | None = Field(default=None, ge=1)
    targets: list[Literal["conv", "linear", "mha"]] = Field(default_factory=lambda: ["conv", "linear", "mha"])

    @model_validator(mode="before")
    @classmethod
    def _semi_structured_amount(cls, data: Any) -> Any:
        # 2:4 prunes exactly half of each group of four; its amount is implied.
        if isinstance(data, dict) and data.get("method") == "2:4" and "amounts" not in data:
            return {**data, "amounts": [0.5]}
        return data

    @field_validator("amounts")
    @classmethod
    def _amounts_in_range(cls, amounts: list[float]) -> list[float]:
        if not amounts:
            raise ValueError("give at least one amount")
        for a in amounts:
            if not 0.0 <= a < 1.0:
                raise ValueError(f"amount {a} is outside [0, 1)")
        return amounts


class TimingSettings(_Strict):
    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=50, ge=1)
    repeats: int = Field(default=3, ge=1)
    definitions: list[TimingDefinition] = Field(default_factory=lambda: ["compute", "e2e"])
    batches: int = Field(default=4, ge=1, description="distinct full batches of real images cycled while timing")


class CalibrationSettings(_Strict):
    method: Literal["entropy", "minmax", "percentile"] = "entropy"
    count: int = Field(default=512, ge=1)
    seed: int = 0


class SweepConfig(_Strict):
    models: list[str] = Field(default_factory=lambda: ["tinycnn"], min_length=1)
    weights: Literal["pretrained", "random"] = "pretrained"
    datasets: list[str] = Field(default_factory=lambda: ["shapes"], min_length=1)
    dataset_size: Literal["160", "320", "full"] | None = None
    class_map: Path | None = None
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    backends: dict[BackendName, list[Precision]] = Field(default_factory=lambda: {"torch": ["fp32"]}, min_length=1)
    pruners: list[PrunerConfig] = Field(default_factory=list)
    timing: TimingSettings = Field(default_factory=TimingSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    int8_mode: Literal["auto", "implicit", "explicit"] = "auto"
    accuracy: bool = True
    max_eval_samples: int | None = Field(default=None, ge=1)
    backend_options: dict[BackendName, dict[str, Any]] = Field(default_factory=dict)
    device_checks: bool = True
    data_root: Path = Path("data")
    cache_dir: Path = Path(".harness-cache")
    out_dir: Path = Path("results")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be >= 1")
        return sorted(set(sizes))

    @field_validator("backends", mode="before")
    @classmethod
    def _backends_as_mapping(cls, value: Any) -> Any:
        # `backends: [torch, ort-cpu]` means fp32 on each; a mapping gives precisions per backend.
        if isinstance(value, list):
            return {name: ["fp32"] for name in value}
        return value

    @model_validator(mode="after")
    def _precisions_supported(self) -> SweepConfig:
        from backends import backend_class

        for name, precisions in self.backends.items():
            if not precisions:
                raise ValueError(f"backends.{name}: list at least one precision")
            try:
                allowed = backend_class(name).precisions
            except ImportError as exc:
                raise ValueError(f"backends.{name}: the backend module failed to import ({exc})") from None
            bad = [p for p in precisions if p not in allowed]
            if bad:
                raise ValueError(f"backends.{name}: cannot run {', '.join(bad)}; allowed: {', '.join(allowed)}")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        return [(b, p) for b, precisions in self.backends.items() for p in precisions]


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{path}: {msg}")
    return f"invalid config {source}: " + "; ".join(parts)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read ``path`` (YAML), apply non-None ``overrides`` (CLI flags), then environment defaults."""
    data: dict[str, Any] = {}
    source = "(flags)"
    if path is not None:
        source = str(path)
        if not path.is_file():
            raise HarnessError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise HarnessError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise HarnessError(f"config file {path} must be a mapping of keys to values")
        data.update(loaded)
    for env, key in (("HARNESS_DATA_ROOT", "data_root"), ("HARNESS_CACHE_DIR", "cache_dir"),
                     ("HARNESS_OUT_DIR", "out_dir")):
        if env in os.environ and key not in data:
            data[key] = os.environ[env]
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise HarnessError(_format_validation_error(exc, source)) from None
