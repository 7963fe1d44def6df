"""CLI errors that must come before any heavy import."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

_NO_TORCH = """
import sys
from typer.testing import CliRunner
from harness.cli import app
result = CliRunner().invoke(app, ["run", "--precision", "int3"])
print(result.exit_code, "torch" in sys.modules)
print(result.output)
"""


def test_a_bad_precision_is_rejected_before_torch_is_imported() -> None:
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, rest = proc.stdout.split("\n", 1)
    assert first == "2 False", proc.stdout
    assert "--precision: 'int3' is not one of fp32, fp16, bf16, int8" in " ".join(rest.split())
