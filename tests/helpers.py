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
