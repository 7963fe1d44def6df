"""Helpers shared by the tests (tests never import each other: what two test files need lives here)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def repo_env(**extra: str) -> dict[str, str]:
    """This process's environment for a subprocess that imports the repository: the repository first on
    PYTHONPATH, whatever was there kept (a machine with packages on PYTHONPATH still finds them)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


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


def sweep_config(tmp_path: Path, cache: Path, **overrides: object):
    """The one config factory of the tests: tinycnn on the embedded shapes set, small timing loops,
    every path under ``tmp_path`` (the trained weights and data in ``cache``); ``overrides`` replace keys.
    torch computes on the CPU, as on a machine without a GPU, so these sweeps mean the same on a GPU
    machine (the gpu-marked tests ask for the GPU themselves)."""
    from harness.config import load_config

    values: dict[str, object] = {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [1, 8],
        "backends": {"torch": ["fp32"], "ort-cpu": ["fp32"]},
        "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 2, "iterations": 5, "repeats": 2},
        "cache_dir": cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out",
        "backend_options": {"torch": {"device": "cpu"}},
    }
    values.update(overrides)
    return load_config(None, values)


#: The session-wide sweep (conftest ``tiny_sweep``): 3 cells at batch 1, torch fp32 and ort-cpu fp32 + int8
#: (entropy calibration), 3 repeats so its CIs are hierarchical. Tests read it; none writes to it.
TINY_SWEEP = {
    "batch_sizes": [1], "backends": {"torch": ["fp32"], "ort-cpu": ["fp32", "int8"]},
    "calibration": {"method": "entropy", "count": 64, "seed": 0},
    "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 2, "iterations": 10, "repeats": 3},
}


def shapes_mismatches(root: Path) -> list[str]:
    """Files of a generated shapes copy that do not match its manifest/SHA256SUMS (empty: intact)."""
    from harness.data.shapes import CHECKSUMS, MANIFEST, _sha256, read_checksums, read_manifest

    m, files = read_manifest(root), read_checksums(root)
    if m is None or not files or m.get("sha256") != _sha256(root / CHECKSUMS):
        return [MANIFEST]
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*/*.png")}
    bad = [rel for rel, d in files.items() if not (root / rel).is_file() or _sha256(root / rel) != d]
    return sorted(bad + sorted(on_disk - files.keys()))
