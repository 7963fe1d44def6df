"""User-facing errors.

Library code raises these with a message that names what is wrong and how to fix
it; the CLI prints the message on one line and exits with code 2 (no traceback).
"""

from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix (bad input, missing data, missing library)."""

    exit_code = 2


class BackendUnavailable(HarnessError):
    """The requested backend cannot run on this machine (missing GPU or library)."""


class UnsupportedCombination(HarnessError):
    """A backend was asked for something it cannot do (e.g. int8 on torch)."""


def missing_library(module: str, purpose: str, install_hint: str) -> BackendUnavailable:
    """Error for a lazily imported library that is not installed."""
    return BackendUnavailable(
        f"{purpose} needs the Python module '{module}', which is not installed; {install_hint}"
    )


class EnvironmentFault(HarnessError):
    """The machine refused an operation (disk full, read-only or invalid path, unreadable database).

    The message is one line that says what happened, how many cells are safe and how to go on;
    ``exit_code`` is 2 when the fault came before any cell ran, 1 after.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_os_error(exc: BaseException) -> str:
    """A few words for an OSError or SQLite error: "No space left on device", "database or disk is full"."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename
        return f"{text}: {where}" if where else text
    return str(exc) or type(exc).__name__


class HarnessNote(UserWarning):
    """A warning the harness itself raises for the user to read (a damaged cache rebuilt, ...): the CLI prints
    it as a ``note:`` line, and capturing library logs never swallows it."""
