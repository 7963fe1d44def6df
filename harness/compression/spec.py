"""What to prune (PruneSpec) and what pruning did (PruneReport)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.compression.registry import IMPORTANCES, NO_PRUNING, TARGET_KINDS, pruner_for
from harness.errors import HarnessError


@dataclass(frozen=True)
class PruneSpec:
    """One pruning configuration.

    ``amount`` is the fraction of weights (zero-fill), of channels (removal) to prune; "2:4" requires
    0.5 and "none" ignores it. ``n`` and ``dim`` only matter for "ln-structured" (norm order, and
    0 = output channels / rows, 1 = input channels / columns); ``importance`` and ``round_to`` only for
    "removal". ``targets`` selects which weight kinds zero-fill and 2:4 pruning touch.
    """

    method: str
    amount: float
    n: int | float = 1
    dim: int = 0
    importance: str = "l1"
    round_to: int | None = None
    targets: tuple[str, ...] = TARGET_KINDS
    #: A registered pruner's own options (sorted name/value pairs); empty for the built-ins.
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        pruner = None if self.method == NO_PRUNING else pruner_for(self.method)  # unknown method: one line
        if isinstance(self.amount, bool) or not isinstance(self.amount, (int, float)):
            raise HarnessError(
                f"pruning amount must be a number, got {self.amount!r}; use a value in [0, 1)"
            )
        if not 0.0 <= float(self.amount) < 1.0:
            raise HarnessError(
                f"pruning amount {self.amount} is outside [0, 1); use e.g. 0.5 to prune half"
            )
        object.__setattr__(self, "amount", float(self.amount))
        fixed = None if pruner is None else pruner.fixed_amount
        if fixed is not None and not math.isclose(self.amount, fixed):
            raise HarnessError(
                f"{self.method} always prunes {fixed:.0%} of the weights, but amount is {self.amount}; "
                f"set amount to {fixed:g} for method {self.method}"
            )
        if isinstance(self.n, bool) or not isinstance(self.n, (int, float)) or not self.n > 0:
            raise HarnessError(
                f"ln-structured norm order n must be a positive number or inf, got {self.n!r}; "
                "use e.g. n = 1 or n = 2"
            )
        if self.dim not in (0, 1):
            raise HarnessError(
                f"ln-structured dim must be 0 (output channels) or 1 (input channels), "
                f"got {self.dim!r}; set dim to 0 or 1"
            )
        if self.importance not in IMPORTANCES:
            raise HarnessError(
                f"unknown channel importance '{self.importance}'; "
                f"use one of {', '.join(IMPORTANCES)}"
            )
        if self.round_to is not None and (
            isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1
        ):
            raise HarnessError(
                f"round_to must be a positive integer or unset, got {self.round_to!r}; "
                "use e.g. 8 for tensor cores, or leave it out"
            )
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        unknown = [t for t in targets if t not in TARGET_KINDS]
        if unknown or not targets:
            raise HarnessError(
                f"invalid pruning targets {list(targets)!r}; "
                f"use a non-empty subset of {', '.join(TARGET_KINDS)}"
            )
        object.__setattr__(self, "targets", tuple(dict.fromkeys(targets)))

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``l1@0.5`` or ``removal[taylor]@0.3``."""
        if self.method == NO_PRUNING:
            return NO_PRUNING
        label = pruner_for(self.method).label
        return f"{label(self) if label else self.method}@{self.amount:g}"

    def option(self, name: str, default: Any = None) -> Any:
        """One of a registered pruner's own options."""
        return dict(self.options).get(name, default)

    def identity_options(self) -> dict[str, Any]:
        """The options a cell's identity (hence its key) records; empty for the unpruned model."""
        if self.method == NO_PRUNING:
            return {}
        common = {"dim": self.dim, "importance": self.importance, "n": self.n, "round_to": self.round_to,
                  "targets": list(self.targets)}
        return {**common, **dict(self.options)} if self.options else common

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        out.pop("options")
        if self.options:
            out["options"] = dict(self.options)
        if isinstance(self.n, float) and math.isinf(self.n):
            out["n"] = str(self.n)
        return out


@dataclass
class PruneReport:
    """What a pruner did to a model.

    ``achieved_sparsity`` is global over the targeted weights: the fraction of zeros for zero-fill and
    2:4, the fraction of targeted weight elements removed for structural removal. ``per_layer_sparsity``
    maps ``<module>.<param>`` names to the same measure per tensor. MACs count multiply-accumulates of one
    forward pass on the example input (zero-fill does not change them: the compute stays dense); they are
    None, with a note, when they could not be counted (e.g. torch-pruning is not installed).
    """

    method: str
    amount: float
    achieved_sparsity: float
    per_layer_sparsity: dict[str, float]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    pattern_24_verified: bool | None = None
    prune_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
