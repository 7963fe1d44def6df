"""Faults a user meets (issue 9): environment faults, literal messages, custom-model preflight,
one writer per output directory, damaged caches rebuilt through a real sweep.

Each test reproduces the fault through the real `harness` command (subprocesses, real files)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_config
from tests.test_cli import assert_one_line_error, harness


def _block_module(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment whose Python cannot import ``module`` (a sitecustomize maps it to None)."""
    site = tmp_path / f"no-{module}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


# ---------------------------------------------------------------------------------- literal messages


def test_missing_extra_hint_prints_its_brackets(tmp_path: Path) -> None:
    """The hint `pip install 'pq-harness[ort-cpu]'` once printed as `pip install 'pq-harness'`."""
    proc = harness("calib", "--model", "tinycnn", "--weights", "random", "--data-root", str(tmp_path / "data"),
                   "--cache-dir", str(tmp_path / "cache"), env=_block_module(tmp_path, "onnxruntime"))
    assert_one_line_error(proc, "pip install 'pq-harness[ort-cpu]'")


def test_paths_with_brackets_print_literally(tmp_path: Path) -> None:
    for name in ("x[bold]y", "runs[abc]", "a[/]b"):
        out = tmp_path / name
        proc = harness("results", "show", "--out", str(out))
        assert_one_line_error(proc, f"no results database at {out / 'results.db'}")


def test_flag_errors_name_the_flag_and_the_allowed_values(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(harness("run", "--precision", "int3", "--out", str(out)),
                          "--precision: 'int3' is not one of fp32, fp16, bf16, int8")
    assert_one_line_error(harness("run", "--backend", "onnx", "--out", str(out)),
                          "--backend: 'onnx' is not one of torch, ort-cpu, ort-cuda, ort-trt, trt-native")
    assert_one_line_error(harness("run", "--weights", "imagenet", "--out", str(out)),
                          "--weights: 'imagenet' is not one of pretrained, random")
    assert_one_line_error(harness("run", "--batch-size", "0", "--out", str(out)), "--batch-size: 0 must be >= 1")
    assert not out.exists(), "no work may start before the check"


# ---------------------------------------------------------------------------------- environment faults


def _tiny_sweep(tmp_path: Path, out: Path, batch_sizes: str = "[1]", iterations: int = 5, name: str = "s.yaml",
                cache: Path | None = None, extra: str = "") -> Path:
    """A small real sweep: untrained tinycnn (no training) on shapes, torch fp32."""
    return write_config(tmp_path / name, f"""
models: [tinycnn]
weights: random
datasets: [shapes]
batch_sizes: {batch_sizes}
backends: {{torch: [fp32]}}
timing: {{warmup: 1, iterations: {iterations}, repeats: 1}}
max_eval_samples: 32
data_root: {tmp_path / 'data'}
cache_dir: {cache or tmp_path / 'cache'}
out_dir: {out}
{extra}""")


def assert_environment_fault(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """One line (no traceback), the exit code, and the traceback kept in a named log file."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    message = " ".join(proc.stderr.split())
    assert message.startswith("error: ") and message.count("error: ") == 1, message
    for needle in needles:
        assert needle in message, message
    log = message.rsplit("full traceback in ", 1)[1].rstrip(")")
    assert "Traceback (most recent call last)" in Path(log).read_text(), log
    return message


def test_out_under_an_existing_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    cfg = _tiny_sweep(tmp_path, afile / "out")
    assert_environment_fault(harness("run", "--config", str(cfg)), 2, "cannot create the output directory",
                             str(afile / "out"), "Not a directory", "no cell ran")
    assert afile.read_text() == "not a directory"


def test_database_from_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    db = sqlite3.connect(out / "results.db")
    db.execute("CREATE TABLE cells (key TEXT PRIMARY KEY, status TEXT, identity TEXT, result TEXT, error TEXT, "
               "traceback TEXT, finished_at REAL, shard TEXT)")
    db.execute("INSERT INTO cells VALUES ('k', 'ok', '{}', NULL, NULL, NULL, 0, 'x')")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    cfg = _tiny_sweep(tmp_path, out)
    assert_environment_fault(harness("run", "--config", str(cfg), "--resume"), 2, "newer PQ Harness",
                             "schema 99", "1 finished cell(s) are safe")
    db = sqlite3.connect(out / "results.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1


def _mount(*args: str) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_read_only_database_is_one_line_and_keeps_its_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = _tiny_sweep(tmp_path, out)
    first = harness("run", "--config", str(cfg))
    assert first.returncode == 0, first.stdout + first.stderr
    if os.geteuid() == 0:  # root writes through permission bits: a read-only bind mount instead
        if not (_mount("--bind", str(out), str(out)) and _mount("-o", "remount,bind,ro", str(out))):
            subprocess.run(["umount", str(out)], capture_output=True)
            pytest.skip("cannot make a read-only mount here")
    else:
        (out / "results.db").chmod(0o444)
        out.chmod(0o555)
    try:
        cfg2 = _tiny_sweep(tmp_path, out, batch_sizes="[1, 2]", name="s2.yaml")
        proc = harness("run", "--config", str(cfg2), "--resume")
        message = assert_environment_fault(proc, 2, str(out / "results.db"), "no cell ran",
                                           "1 finished cell(s) are safe")
        assert "readonly" in message or "read-only" in message or "unable to open" in message, message
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)], capture_output=True)
        else:
            out.chmod(0o755)
    assert sqlite3.connect(out / "results.db").execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
