"""What every executor shares: its interface and the ``node`` it records on each outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from harness.store.outcome import CellOutcome
    from harness.sweep.plan import Unit

EXECUTOR_KINDS: tuple[str, ...] = ("local", "ray")

#: The unit function: one outcome per cell of the unit, failures included.
RunUnit = Callable[["Unit"], Iterator["CellOutcome"]]
#: The driver's commit: store the outcome, count it, tell the observer.
Commit = Callable[["CellOutcome"], None]


class Executor(Protocol):
    def run(self, units: Sequence[Unit], run_unit: RunUnit, commit: Commit) -> None:
        """Run every unit and hand each outcome to ``commit`` as soon as it exists."""


def with_node(outcome: CellOutcome, node: dict[str, Any]) -> CellOutcome:
    """The outcome with ``node`` recorded in its result (a failed cell has no result to carry it)."""
    if outcome.result is None:
        return outcome
    return dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, node=node))
