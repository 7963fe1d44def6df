"""Which backend x precision can run here: ``harness hw`` asks each backend, it holds no rule itself.

Every rule is the backend's ``unavailable_reason(precision, facts)`` (a pure function of
:class:`harness.machine.MachineFacts`), the same one config validation, preflight and activation ask.
Tests pass their own ``rules`` mapping (made-up backends) to exercise this module without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from harness.hw.records import Availability
from harness.machine import MachineFacts


class AvailabilityRule(Protocol):
    """What ``harness hw`` needs of a backend class."""

    def unavailable_reason(self, precision: str, facts: MachineFacts) -> str | None: ...


def installed_rules() -> dict[str, AvailabilityRule]:
    """Every registered backend class, by name, in registry order (imported lazily)."""
    import backends

    return {name: backends.backend_class(name) for name in backends.BACKEND_NAMES}


def all_precisions() -> tuple[str, ...]:
    from backends.base import PRECISIONS

    return tuple(PRECISIONS)


def availability_matrix(
    facts: MachineFacts,
    rules: Mapping[str, AvailabilityRule] | None = None,
    precisions: tuple[str, ...] | None = None,
) -> list[Availability]:
    """Backend x precision, each with the backend's own reason (None: it can run here)."""
    rules = installed_rules() if rules is None else rules
    precisions = all_precisions() if precisions is None else precisions
    return [
        Availability(name, precision, rule.unavailable_reason(precision, facts))
        for name, rule in rules.items()
        for precision in precisions
    ]
