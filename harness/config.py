"""Typed sweep configuration (YAML), validated with pydantic.

Unknown keys and bad values are rejected with the key's path and the allowed
values. CLI flags override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from backends import BACKEND_NAMES, backend_class
from backends.names import PRECISIONS
from harness.compression.recovery import RecoverOptions
from harness.compression.registry import NO_PRUNING, BuiltinOptions, PrunerOptions, methods, pruner_for
from harness.compression.spec import PruneSpec
from harness.errors import HarnessError
from harness.measure.timing import TimingSettings

# The allowed values come from their one home (the backend registry, the pruning spec).
BackendName = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionsError(ValueError):
    """A nested options model rejected a section: the formatter reports each inner error at its own key."""

    def __init__(self, inner: ValidationError) -> None:
        super().__init__(str(inner))
        self.inner = inner


#: Keys every ``pruners:`` entry has, whatever its method; the others are the pruner's own options.
PRUNER_COMMON_KEYS = ("method", "amounts", "recover")


class PrunerConfig(_Strict):
    """One ``pruners:`` entry of the YAML: a method swept over ``amounts``, plus the keys that method's
    registered options model accepts (:mod:`harness.compression.registry`); :meth:`specs` expands it
    into the :class:`~harness.compression.spec.PruneSpec` values the sweep and ``apply_pruning`` use."""

    method: str
    amounts: list[float] = Field(default_factory=lambda: [0.0])
    options: PrunerOptions = Field(default_factory=BuiltinOptions)
    # A short fine-tune after pruning (train split only); the same pruner with and without it are two cells.
    recover: RecoverOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_options(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "options" in data:
            return data
        common = {k: v for k, v in data.items() if k in PRUNER_COMMON_KEYS}
        method = common.get("method")
        # A fixed-amount pruner (2:4 prunes exactly half of each group of four) implies its amount.
        if method in methods() and method != NO_PRUNING:
            fixed = pruner_for(method).fixed_amount
            if fixed is not None and "amounts" not in common:
                common["amounts"] = [fixed]
        return {**common, "options": {k: v for k, v in data.items() if k not in PRUNER_COMMON_KEYS}}

    @field_validator("method")
    @classmethod
    def _registered(cls, method: str) -> str:
        if method not in methods():
            raise ValueError(f"unknown pruning method '{method}'; allowed: {', '.join(methods())}")
        return method

    @field_validator("options", mode="wrap")
    @classmethod
    def _parse_options(cls, value: Any, handler: Any, info: ValidationInfo) -> PrunerOptions:
        if isinstance(value, PrunerOptions):
            return value
        method = info.data.get("method")
        if method is None:  # the method was rejected: its options cannot be checked
            return BuiltinOptions()
        options_type = BuiltinOptions if method == NO_PRUNING else pruner_for(method).options
        try:
            return options_type.model_validate(value or {})
        except ValidationError as exc:
            raise OptionsError(exc) from None

    @field_validator("amounts")
    @classmethod
    def _amounts_in_range(cls, amounts: list[float]) -> list[float]:
        if not amounts:
            raise ValueError("give at least one amount")
        for a in amounts:
            if not 0.0 <= a < 1.0:
                raise ValueError(f"amount {a} is outside [0, 1)")
        return amounts

    def specs(self) -> list[PruneSpec]:
        """One spec per amount > 0 (amount 0 of any method is the unpruned model, see :func:`prune_specs`)."""
        if self.method == NO_PRUNING:
            return []
        values = self.options.model_dump()
        if isinstance(self.options, BuiltinOptions):
            common = {"n": values["n"], "dim": values["dim"], "importance": values["importance"],
                      "round_to": values["round_to"], "targets": tuple(values["targets"])}
            return [PruneSpec(self.method, a, **common) for a in self.amounts if a > 0]
        own = tuple(sorted(values.items()))
        return [PruneSpec(self.method, a, options=own) for a in self.amounts if a > 0]


def prune_specs(pruners: list[PrunerConfig]) -> list[PruneSpec]:
    """Every distinct pruning spec of a sweep: the unpruned model first (listed once), then each
    method x amount."""
    return list(dict.fromkeys([PruneSpec("none", 0.0), *(s for p in pruners for s in p.specs())]))


def prune_steps(pruners: list[PrunerConfig]) -> list[tuple[PruneSpec, RecoverOptions | None]]:
    """Every distinct pruning step: (spec, recovery options or None), the unpruned model first. The same
    spec with and without ``recover`` are two steps (two cells each)."""
    return list(dict.fromkeys([(PruneSpec("none", 0.0), None),
                               *((s, p.recover) for p in pruners for s in p.specs())]))


class Int8Settings(_Strict):
    """One ``int8:`` variant of every int8 cell. ``sensitivity``: score each quantizable node (stored with
    the cell); ``max_accuracy_drop`` (points): leave the most harmful nodes in FP32, one at a time, until
    the drop on ``holdout`` train images that are not calibration images is within it. The empty
    variant is plain INT8 (today's cells, same keys)."""

    sensitivity: bool = False
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    sensitivity_mode: Literal["fp32-one", "int8-one"] = "fp32-one"
    holdout: int = Field(default=500, ge=1)
    holdout_seed: int = 1

    @property
    def plain(self) -> bool:
        return not self.sensitivity and self.max_accuracy_drop is None

    def identity(self) -> dict[str, Any] | None:
        """What the cell key holds (None for plain INT8, so its key is today's)."""
        return None if self.plain else self.model_dump()


class SweepCalibration(_Strict):
    """The sweep's ``calibration:`` block: which method, how many train-split images, which seed
    (``calib.CalibrationSettings`` is the full settings record the calibration artifacts carry), and
    which quantizer writes the Q/DQ models: ``harness`` (this package) or ``modelopt`` (NVIDIA ModelOpt's
    ``modelopt.onnx.quantization``, the optional ``modelopt`` extra: entropy or minmax, which it calls max)."""

    method: Literal["entropy", "minmax", "percentile"] = "entropy"
    count: int = Field(default=512, ge=1)
    seed: int = 0
    tool: Literal["harness", "modelopt"] = "harness"

    @model_validator(mode="after")
    def _modelopt_methods(self) -> SweepCalibration:
        if self.tool == "modelopt" and self.method == "percentile":
            raise ValueError("calibration.method: modelopt calibrates with entropy or minmax (its 'max'), "
                             "not percentile")
        return self

    def identity(self) -> dict[str, Any]:
        """What a quantized cell's key holds: the block, without ``tool`` when it is the default (so every
        cell calibrated by the harness keeps the key it always had)."""
        data = self.model_dump()
        if data["tool"] == "harness":
            del data["tool"]
        return data


class ExecutorSettings(_Strict):
    """Where units run: ``local`` (this process, the default) or ``ray`` (a Ray cluster; the optional
    ``ray`` extra). ``address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` of the
    head, or none (start a private local cluster). A unit whose worker died is run again for its
    remaining cells at most ``max_retries`` times; CPU units ask for ``cpus_per_unit`` cores, GPU units
    (any cell on a CUDA backend) for one whole GPU."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    max_retries: int = Field(default=2, ge=0)
    cpus_per_unit: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _address_needs_ray(self) -> ExecutorSettings:
        if self.address is not None and self.kind != "ray":
            raise ValueError("address: only the ray executor connects to an address")
        return self


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
    calibration: SweepCalibration = Field(default_factory=SweepCalibration)
    int8_mode: Literal["auto", "implicit", "explicit"] = "auto"
    # Variants of every int8 cell (one block or a list); default: plain INT8 only.
    int8: list[Int8Settings] = Field(default_factory=lambda: [Int8Settings()], min_length=1)
    accuracy: bool = True
    max_eval_samples: int | None = Field(default=None, ge=1)
    eval_workers: int = Field(default=0, ge=0)  # DataLoader processes decoding the evaluation split
    eval_cache: bool = False  # keep the decoded split as uint8 under cache_dir (reused by same-transform models)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    # A mapping in YAML; each backend's typed Options checks it (unknown or bad options are errors).
    backend_options: dict[BackendName, dict[str, Any]] = Field(default_factory=dict)
    device_checks: bool = True
    # A separate per-layer profiling pass per cell after its timing (ONNX Runtime profiler, TensorRT IProfiler).
    profile_layers: bool = True
    data_root: Path = Path("data")
    cache_dir: Path = Path(".harness-cache")
    out_dir: Path = Path("results")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be >= 1")
        return sorted(set(sizes))

    @field_validator("int8", mode="before")
    @classmethod
    def _int8_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("backends", mode="before")
    @classmethod
    def _backends_as_mapping(cls, value: Any) -> Any:
        # `backends: [torch, ort-cpu]` means fp32 on each; a mapping gives precisions per backend.
        if isinstance(value, list):
            return {name: ["fp32"] for name in value}
        return value

    @model_validator(mode="after")
    def _ask_each_backend(self) -> SweepConfig:
        """Each backend says which precisions it runs and which options it takes."""
        for name, precisions in self.backends.items():
            if not precisions:
                raise ValueError(f"backends.{name}: list at least one precision")
            allowed = _backend(name, "backends").precisions
            bad = [p for p in precisions if p not in allowed]
            if bad:
                raise ValueError(f"backends.{name}: cannot run {', '.join(bad)}; allowed: {', '.join(allowed)}")
        for name, options in self.backend_options.items():
            try:
                _backend(name, "backend_options").parse_options(options)
            except HarnessError as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _modelopt_has_no_variants(self) -> SweepConfig:
        if self.calibration.tool == "modelopt" and any(not v.plain for v in self.int8):
            raise ValueError("int8: sensitivity and max_accuracy_drop score the harness's own Q/DQ variants; with "
                             "calibration.tool modelopt use plain int8 ({})")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        return [(b, p) for b, precisions in self.backends.items() for p in precisions]


def _backend(name: str, section: str) -> Any:
    try:
        return backend_class(name)
    except ImportError as exc:
        raise ValueError(f"{section}.{name}: the backend module failed to import ({exc})") from None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, OptionsError):  # a pruner's options: each error at its own key, beside the entry's
            base = path.removesuffix(".options")
            parts += [f"{base}.{'.'.join(str(p) for p in e['loc'])}: "
                      f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in inner.inner.errors()]
            continue
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        # Whole-config checks name their own key path in the message.
        parts.append(f"{path}: {msg}" if path else msg)
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
