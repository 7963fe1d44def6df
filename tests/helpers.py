"""Helpers shared by the tests (tests never import each other: what two test files need lives here)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def harness(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """The `harness` command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess | CliResult, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    message = " ".join(proc.stderr.split())
    for needle in needles:
        assert needle in message, message


def committed_cells(db: Path) -> int:
    """Cells committed to a sweep's database so far (0 while the file or its table does not exist yet)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the file exists before its table does
        return 0


#: A custom model (``build``) whose load-time probe (batch 1) passes and whose later inference raises:
#: its cells are recorded failed while the rest of the sweep goes on.
BROKEN_AT_INFERENCE = (
    "import torch\n"
    "class Broken(torch.nn.Module):\n"
    "    input_size = 32\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.armed = False\n"
    "    def forward(self, x):\n"
    "        if self.armed:\n"
    "            raise RuntimeError('inference exploded')\n"
    "        self.armed = not self.training and x.shape[0] > 1\n"
    "        return torch.zeros(x.shape[0], 10)\n"
    "def build():\n"
    "    return Broken()\n"
)


@dataclass(frozen=True)
class CliResult:
    """What an in-process `harness` run printed and returned (the fields of a CompletedProcess the tests read)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict | None = None) -> CliResult:
    """The `harness` command in this process (typer's CliRunner): for the one-line errors, which need no
    fresh interpreter; the tests that need one (signals, a blocked import, no network) use :func:`harness`."""
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)
