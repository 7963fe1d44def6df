"""The `harness` command as a user runs it: one-line errors with exit code 2, real sweeps."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, assert_one_line_error, committed_cells, harness, run_cli, write_config


def test_unknown_model_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run_cli("run", "--model", "resnet9000", "--out", str(tmp_path), "--weights", "random")
    assert_one_line_error(proc, "unknown model 'resnet9000'", "harness models")


def test_gpu_backend_without_gpu_is_a_one_line_error(tmp_path: Path) -> None:
    for backend, precision in (("trt-native", "int8"), ("ort-trt", "fp16"), ("ort-cuda", "fp32"),
                               ("torch", "fp16")):
        proc = run_cli("run", "--backend", backend, "--precision", precision, "--out", str(tmp_path))
        assert_one_line_error(proc, f"backend '{backend}' cannot run here")
    assert not (tmp_path / "results.db").exists(), "no work may start before the check"


def test_impossible_combination_fails_before_work(tmp_path: Path) -> None:
    proc = run_cli("run", "--backend", "torch", "--precision", "int8", "--out", str(tmp_path))
    assert_one_line_error(proc, "torch", "int8")


def test_malformed_config_names_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", "models: [tinycnn]\ntiming:\n  warmpu: 3\n")
    assert_one_line_error(run_cli("run", "--config", str(cfg)), "timing.warmpu", "unknown key")
    cfg2 = write_config(tmp_path / "d.yaml", "backends: {tensorrt: [fp32]}\n")
    assert_one_line_error(run_cli("run", "--config", str(cfg2)), "backends", "ort-cpu")
    cfg3 = write_config(tmp_path / "e.yaml", "models: [tinycnn\n")
    assert_one_line_error(run_cli("run", "--config", str(cfg3)), "not valid YAML")


def test_backend_option_typo_is_a_one_line_error_naming_the_allowed_options(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t.yaml", "backend_options:\n  torch: {chanels_last: true}\n")
    assert_one_line_error(run_cli("run", "--config", str(cfg), "--out", str(tmp_path / "o")),
                          "backend_options.torch", "unknown option 'chanels_last'",
                          "device", "channels_last", "compile", "compile_mode")
    cfg2 = write_config(tmp_path / "o.yaml", "backends: [ort-cpu]\nbackend_options:\n  ort-cpu: {thread: 2}\n")
    assert_one_line_error(run_cli("run", "--config", str(cfg2), "--out", str(tmp_path / "o")),
                          "backend_options.ort-cpu", "unknown option 'thread'", "allowed: threads")
    assert not (tmp_path / "o").exists(), "no work may start before the check"


def test_missing_dataset_gives_fetch_hint(tmp_path: Path) -> None:
    proc = run_cli("run", "--model", "resnet18", "--weights", "random", "--dataset", "imagenette",
                   "--data-root", str(tmp_path / "nodata"), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "harness data fetch imagenette")
    assert not (tmp_path / "out" / "results.db").exists()


def test_help_has_examples() -> None:
    commands = (["run"], ["demo"], ["models"], ["datasets"], ["data", "fetch"], ["data", "list"], ["results", "show"],
                ["results", "export"], ["calib"], ["report"], ["compare"], ["hw"])
    for cmd in commands:
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0
        assert "Example" in proc.stdout and f"harness {cmd[0]}" in proc.stdout, cmd


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_finishes_each_cell_once(tmp_path: Path, shared_cache: Path) -> None:
    """kill -9 as soon as the first cell is committed, then --resume: every cell exactly once, all ok.

    Kept cheap: the session's shared trained cache, 4 cells, few iterations and evaluation images."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "sweep.yaml", f"""
models: [tinycnn]
datasets: [shapes]
batch_sizes: [1, 2]
backends: {{torch: [fp32], ort-cpu: [fp32]}}
timing: {{min_seconds: 0, warmup_seconds: 0, warmup: 1, iterations: 20, repeats: 1}}
max_eval_samples: 64
data_root: {tmp_path / 'data'}
cache_dir: {shared_cache}
out_dir: {out}
""")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.db"
    done = 0
    while proc.poll() is None:
        done = committed_cells(db)
        if done >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "sweep finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert 1 <= killed_at < 4
    resumed = harness("run", "--config", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{killed_at} skipped" in " ".join(resumed.stdout.split())
    rows = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT key), SUM(status = 'ok') FROM cells").fetchone()
    assert rows == (4, 4, 4)


@pytest.mark.slow
def test_calib_command_builds_artifacts_with_provenance(tmp_path: Path, shared_cache: Path) -> None:
    proc = harness("calib", "--model", "tinycnn", "--dataset", "shapes", "--count", "64", "--method", "minmax",
                   "--cache-dir", str(shared_cache), "--data-root", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Q/DQ ONNX (cpu)" in text and "TensorRT EP table" in text and "provenance" in text
    assert '"count": 64' in text and '"method": "minmax"' in text


def test_report_command_without_results_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("report", "--out", str(tmp_path)), "no results database")


@pytest.mark.slow
def test_uncached_pretrained_weights_fail_before_work_offline(tmp_path: Path) -> None:
    """No network and no cached weights: a one-line error that says how to get them, before any cell runs."""
    env = {"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = harness("run", "--model", "squeezenet1_1", "--dataset", "shapes", "--data-root", str(tmp_path),
                   "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), env=env)
    assert_one_line_error(proc, "pretrained weights for squeezenet1_1", "--weights random")
    assert not (tmp_path / "out" / "results.db").exists()


@pytest.mark.slow
def test_data_fetch_offline_says_so(tmp_path: Path) -> None:
    env = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    proc = harness("data", "fetch", "imagewoof", "--size", "160", "--data-root", str(tmp_path), env=env, timeout=120)
    assert_one_line_error(proc, "offline", "imagewoof2-160")


@pytest.mark.slow
def test_ctrl_c_mid_sweep_is_a_clean_message(tmp_path: Path, shared_cache: Path) -> None:
    out = tmp_path / "out"
    # Two units (unpruned, then pruned): a unit's cells are timed interleaved and committed together, so
    # the interrupt lands while the second unit works, mid-sweep.
    config = tmp_path / "sweep.yaml"
    config.write_text("models: [tinycnn]\ndatasets: [shapes]\nbatch_sizes: [1, 2, 3]\nbackends: {torch: [fp32]}\n"
                      "pruners: [{method: l1-global, amounts: [0.5]}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config", str(config), "--iterations", "150",
                             "--cache-dir", str(shared_cache), "--data-root", str(tmp_path), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = out / "results.db"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if committed_cells(db) >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a sweep running (it would hold the timing lock)
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
