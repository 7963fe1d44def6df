"""What a sweep tells whoever watches it (the CLI renders it; tests record it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from harness.store.outcome import CellOutcome


class Observer(Protocol):
    """Progress callbacks of one sweep."""

    def planned(self, cells: int, skipped: int) -> None:
        """The sweep has ``cells`` cells, ``skipped`` of them finished before (--resume)."""

    def status(self, text: str) -> None:
        """What the sweep is doing now."""

    def notice(self, text: str) -> None:
        """Something the user should see at once (e.g. waiting for another process's timing window)."""

    def evaluated(self, done: int, total: int) -> None:
        """Evaluation images scored so far in the current session."""

    def cell_done(self, outcome: CellOutcome) -> None:
        """A cell was committed to the store (``outcome.status`` is ok or error)."""


class SweepObserver:
    """An :class:`Observer` that ignores everything; subclass it to watch part of a sweep."""

    def planned(self, cells: int, skipped: int) -> None:
        return None

    def status(self, text: str) -> None:
        return None

    def notice(self, text: str) -> None:
        self.status(text)

    def evaluated(self, done: int, total: int) -> None:
        return None

    def cell_done(self, outcome: CellOutcome) -> None:
        return None
