"""Packaging: Python 3.10 syntax (the V100 container), the console script, separate ONNX Runtime extras."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

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
    for command in ("run", "demo", "models", "datasets", "data", "results", "calib", "report", "compare", "hw"):
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


def test_packaged_demo_config_is_the_top_level_one() -> None:
    """`harness demo` reads the copy inside the package (works after a plain `pip install .` from any
    directory); configs/demo.yaml is the same file, for users to read and copy."""
    from harness.configs import demo_config

    with demo_config() as path:
        assert path.read_text() == (REPO / "configs" / "demo.yaml").read_text()


def test_wheel_ships_the_demo_config(tmp_path: Path) -> None:
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a clean copy: an in-tree build/ would hide a missing package-data rule
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("harness", "backends", "calib"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("pq_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/configs/demo.yaml" in names and "harness/configs/__init__.py" in names
