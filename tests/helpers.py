"""Small helpers shared by the tests that watch a sweep from outside (kill, Ctrl-C, full disk)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


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
