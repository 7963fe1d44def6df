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
