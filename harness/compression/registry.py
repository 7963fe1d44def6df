"""The pruner registry: each pruning method is one :class:`Pruner` record, registered once.

A pruner declares its method name, the function that prunes (a ``"module:function"`` path, imported
when first used, or the function itself), its options model (method-specific keys of a ``pruners:``
entry; the entry's common keys are ``method``, ``amounts`` and ``recover``), whether it needs
gradient batches from the calibration split, and which artifact flags its result sets. Adding a
pruner is one module with its function and one :func:`register` call; config validation, the sweep
and ``apply_pruning`` read this registry and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: The method of the unpruned model (every sweep's first step); not a pruner.
NO_PRUNING = "none"
#: Channel importances for structural removal (method "removal").
IMPORTANCES = ("random", "l1", "l2", "taylor", "bn-scale")
#: Kinds of weights a pruner may touch: Conv*d/Linear ``.weight`` and MultiheadAttention's
#: fused ``in_proj_weight`` (MHA's ``out_proj`` is an ``nn.Linear`` and counts as "linear").
TARGET_KINDS = ("conv", "linear", "mha")


class PrunerOptions(BaseModel):
    """A pruner's own options (the method-specific keys of its ``pruners:`` entry); unknown keys are
    rejected. Subclass it for a new pruner."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinOptions(PrunerOptions):
    """The options the built-in pruners share (each uses the ones its method documents; the others
    are accepted and recorded, as they always were)."""

    n: float = 1
    dim: Literal[0, 1] = 0
    importance: Literal[IMPORTANCES] = "l1"  # type: ignore[valid-type]
    round_to: int | None = Field(default=None, ge=1)
    targets: list[Literal[TARGET_KINDS]] = Field(default_factory=lambda: list(TARGET_KINDS))  # type: ignore[valid-type]


@dataclass(frozen=True)
class PruneInputs:
    """What a pruner may use besides the model and its spec."""

    example_input: torch.Tensor
    calib_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None  # when it needs gradients
    seed: int = 0


@dataclass(frozen=True)
class PruneStep:
    """What a pruner did to the model (in place): notes, and for structural methods what was removed
    (then sparsity is measured as the fraction removed, and MACs are counted again)."""

    notes: list[str] = field(default_factory=list)
    pattern_24_verified: bool | None = None
    removed_fraction: float | None = None
    per_layer_removed: dict[str, float] | None = None


class PruneSpec(Protocol):
    """What a pruner reads of its configuration (:class:`harness.compression.spec.PruneSpec` is the one the
    harness builds; the registry only needs its shape, so the two modules do not import each other)."""

    method: str
    amount: float
    n: int | float
    dim: int
    importance: str
    round_to: int | None
    targets: tuple[str, ...]
    options: tuple[tuple[str, Any], ...]


PruneFunction = Callable[["nn.Module", PruneSpec, PruneInputs], PruneStep]


def _never(spec: PruneSpec) -> bool:
    return False


@dataclass(frozen=True)
class Pruner:
    method: str
    prune: str | PruneFunction  # "module:function", imported on first use
    options: type[PrunerOptions] = BuiltinOptions
    needs_gradient_batches: Callable[[PruneSpec], bool] = _never
    sparse_weights: bool = False  # its pattern is one TensorRT's sparse tactics use (2:4)
    zero_fill: bool = False  # zeros written into dense tensors: same dense kernels, so no speed-up expected
    fixed_amount: float | None = None  # the one amount it prunes (2:4: half of each group of four)
    label: Callable[[PruneSpec], str] | None = None  # e.g. "removal[taylor]"; default: the method

    def function(self) -> PruneFunction:
        if callable(self.prune):
            return self.prune
        module_name, _, name = self.prune.partition(":")
        return getattr(importlib.import_module(module_name), name)


@dataclass(frozen=True)
class ArtifactFlags:
    """What a pruning step tells the backends about its model."""

    sparse_weights: bool = False


_PRUNERS: dict[str, Pruner] = {}


def register(pruner: Pruner) -> Pruner:
    """Add a pruner (a second registration of the same method replaces the first)."""
    if pruner.method == NO_PRUNING:
        raise HarnessError(f"'{NO_PRUNING}' is the unpruned model; name the pruner otherwise")
    _PRUNERS[pruner.method] = pruner
    return pruner


def unregister(method: str) -> None:
    _PRUNERS.pop(method, None)


def methods() -> tuple[str, ...]:
    """Every method a ``pruners:`` entry accepts ("none" first)."""
    return (NO_PRUNING, *_PRUNERS)


def pruner_for(method: str) -> Pruner:
    try:
        return _PRUNERS[method]
    except KeyError:
        raise HarnessError(f"unknown pruning method '{method}'; use one of {', '.join(methods())}") from None


def is_zero_fill(method: str) -> bool:
    """Whether ``method`` only writes zeros into dense tensors (no speed-up is expected from it)."""
    pruner = _PRUNERS.get(method)
    return pruner is not None and pruner.zero_fill


def parse_options(method: str, raw: Mapping[str, Any]) -> PrunerOptions:
    """The method-specific keys of a ``pruners:`` entry, validated by the pruner's options model."""
    return pruner_for(method).options.model_validate(dict(raw))


_BUILTIN = "harness.compression.builtin_pruners"
for _name in ("random", "l1", "ln-structured", "l1-global"):
    register(Pruner(_name, f"{_BUILTIN}:zero_fill", zero_fill=True,
                    label=(lambda s: f"ln-structured[n={s.n},dim={s.dim}]") if _name == "ln-structured" else None))
register(Pruner("removal", f"{_BUILTIN}:removal", needs_gradient_batches=lambda s: s.importance == "taylor",
                label=lambda s: f"removal[{s.importance}]"))
register(Pruner("2:4", f"{_BUILTIN}:semi_structured", sparse_weights=True, fixed_amount=0.5))
