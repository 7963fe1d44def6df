"""Packaging: Python 3.10 syntax (the V100 container), the console script, separate ONNX Runtime extras."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = sorted(p for d in ("harness", "backends", "calib", "bench") for p in (REPO / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_sources_parse_as_python_310(path: Path) -> None:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_console_script_is_installed_and_answers() -> None:
    exe = shutil.which("harness")
    if exe is None:
        pytest.skip("the project is not installed (pip install -e .)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("run", "demo", "models", "datasets", "data", "results", "calib", "report", "hw"):
        assert command in proc.stdout


def test_library_code_never_prints() -> None:
    """The CLI owns the console; library modules return data and raise errors."""
    offenders = []
    for path in SOURCES:
        if path.name == "cli.py" or path.parts[-2] == "bench":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
