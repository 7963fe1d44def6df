"""No module of harness/, backends/ or calib/ grows past 600 lines: a module that does several things is split
by what each does (as stats, cli and compare were)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
             for package in ("harness", "backends", "calib") for path in (REPO / package).rglob("*.py")}
    assert len(sizes) > 50
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
