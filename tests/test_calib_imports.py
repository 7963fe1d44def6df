"""calib/ stands below the backends: it never imports them, and its ORT modules form no circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

CALIB = REPO / "calib"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (relative imports resolved in calib)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(f"calib.{node.module or ''}".rstrip(".") if node.level else node.module or "")
    return found


def test_calib_never_imports_the_backends() -> None:
    offenders = {p.name: sorted(m for m in _imports(p) if m == "backends" or m.startswith("backends."))
                 for p in sorted(CALIB.glob("*.py"))}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_qdq_and_table_modules_do_not_import_each_other() -> None:
    assert "calib.ort_table" not in _imports(CALIB / "ort_qdq.py")
    assert "calib.ort_qdq" not in _imports(CALIB / "ort_table.py")


def test_batch_factory_is_defined_once() -> None:
    defined = [p.name for p in sorted(CALIB.glob("*.py"))
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, (ast.Assign, ast.AnnAssign))
               and any(isinstance(t, ast.Name) and t.id == "BatchFactory"
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert defined == ["ort_base.py"]


def test_public_names_still_import_from_their_old_modules() -> None:
    from backends.base import PhaseTimes
    from calib.ort_qdq import as_numpy, build_qdq_model, calibration_method, make_reader  # noqa: F401
    from calib.ort_table import (  # noqa: F401
        compute_tensor_ranges,
        entropy_threshold,
        tensor_thresholds,
        write_trt_calibration_table,
    )
    from harness.phases import PhaseTimes as Shared

    assert PhaseTimes is Shared
