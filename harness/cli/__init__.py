"""The `harness` command. It owns the console: library code never prints, and what libraries log during a
run is captured with the cells (``--verbose`` shows it).

Commands by group: ``run`` (a sweep, the demo), ``results`` (show, export, report, compare, recommend) and
``tools`` (models, datasets, data, calib, hw, selftest, sensitivity); ``common`` holds the apps, the consoles
and the guard every command runs under, ``table`` the results table.
"""

from __future__ import annotations

# ruff: noqa: I001
# Importing the command modules registers their commands, in this order in `harness --help`.
from harness.cli import run  # noqa: F401
from harness.cli import tools  # noqa: F401
from harness.cli import results  # noqa: F401
from harness.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
