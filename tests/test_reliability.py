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
