"""Faults a user meets: environment faults, literal messages, custom-model preflight,
one writer per output directory, damaged caches rebuilt through a real sweep.

Each test reproduces the fault through the real `harness` command (subprocesses, real files)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, CliResult, assert_one_line_error, committed_cells, harness, run_cli, write_config


def _block_module(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment whose Python cannot import ``module`` (a sitecustomize maps it to None)."""
    site = tmp_path / f"no-{module}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


# ---------------------------------------------------------------------------------- literal messages


@pytest.mark.slow
def test_missing_extra_hint_prints_its_brackets(tmp_path: Path) -> None:
    """The hint `pip install 'pq-harness[ort-cpu]'` once printed as `pip install 'pq-harness'`."""
    proc = harness("calib", "--model", "tinycnn", "--weights", "random", "--data-root", str(tmp_path / "data"),
                   "--cache-dir", str(tmp_path / "cache"), env=_block_module(tmp_path, "onnxruntime"))
    assert_one_line_error(proc, "pip install 'pq-harness[ort-cpu]'")


def test_paths_with_brackets_print_literally(tmp_path: Path) -> None:
    for name in ("x[bold]y", "runs[abc]", "a[/]b"):
        out = tmp_path / name
        proc = run_cli("results", "show", "--out", str(out))
        assert_one_line_error(proc, f"no results database at {out / 'results.db'}")


def test_flag_errors_name_the_flag_and_the_allowed_values(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(run_cli("run", "--precision", "int3", "--out", str(out)),
                          "--precision: 'int3' is not one of fp32, tf32, fp16, bf16, int8")
    assert_one_line_error(run_cli("run", "--backend", "onnx", "--out", str(out)),
                          "--backend: 'onnx' is not one of torch, ort-cpu, ort-cuda, ort-trt, trt-native")
    assert_one_line_error(run_cli("run", "--weights", "imagenet", "--out", str(out)),
                          "--weights: 'imagenet' is not one of pretrained, random")
    assert_one_line_error(run_cli("run", "--batch-size", "0", "--out", str(out)), "--batch-size: 0 must be >= 1")
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
timing: {{min_seconds: 0, warmup_seconds: 0, warmup: 1, iterations: {iterations}, repeats: 1}}
max_eval_samples: 32
data_root: {tmp_path / 'data'}
cache_dir: {cache or tmp_path / 'cache'}
out_dir: {out}
{extra}""")


def assert_environment_fault(proc: subprocess.CompletedProcess | CliResult, code: int, *needles: str) -> str:
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
    assert_environment_fault(run_cli("run", "--config", str(cfg)), 2, "cannot create the output directory",
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
    assert_environment_fault(run_cli("run", "--config", str(cfg), "--resume"), 2, "newer PQ Harness",
                             "schema 99", "1 finished cell(s) are safe")
    db = sqlite3.connect(out / "results.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1


def _mount(*args: str) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
def test_read_only_database_is_one_line_and_keeps_its_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = _tiny_sweep(tmp_path, out)
    first = harness("run", "--config", str(cfg))
    assert first.returncode == 0, first.stdout + first.stderr
    if os.geteuid() == 0:  # root writes through permission bits: a read-only bind mount instead
        if not (_mount("--bind", str(out), str(out)) and _mount("-o", "remount,bind,ro", str(out))):
            subprocess.run(["umount", str(out)], capture_output=True, check=False)
            pytest.skip("cannot make a read-only mount here")
    else:
        (out / "results.db").chmod(0o444)
        out.chmod(0o555)
    try:
        cfg2 = _tiny_sweep(tmp_path, out, batch_sizes="[1, 2]", name="s2.yaml")
        proc = harness("run", "--config", str(cfg2), "--resume")
        message = assert_environment_fault(proc, 2, str(out / "results.db"), "no cell ran",
                                           "1 finished cell(s) are safe")
        assert any(word in message.lower() for word in ("readonly", "read-only", "unable to open")), message
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)], capture_output=True, check=False)
        else:
            out.chmod(0o755)
    assert sqlite3.connect(out / "results.db").execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1


def _fill(directory: Path) -> None:
    """Write a filler file until the filesystem says it is full."""
    with (directory / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


_INJECT_ENOSPC = """
import sqlite3
import harness.store.results as _results
_put, _calls = _results.ResultStore.put, [0]
def _full_after_one(self, outcome):
    _calls[0] += 1
    if _calls[0] > 1:
        raise sqlite3.OperationalError("database or disk is full")
    return _put(self, outcome)
_results.ResultStore.put = _full_after_one
"""


@pytest.mark.slow
def test_full_disk_mid_sweep_is_one_line_loses_nothing_and_resumes(tmp_path: Path) -> None:
    """The results disk fills after the first cell: one line (exit 1) naming the safe cells and --resume;
    the committed cell survives and --resume finishes the rest. A real tiny tmpfs where this process may
    mount one; else ENOSPC injected at the store's write."""
    out = tmp_path / "out"
    out.mkdir()
    # Four units of one cell each (a unit's cells are timed interleaved and finish together).
    cfg = _tiny_sweep(tmp_path, out, iterations=100,
                      extra="pruners: [{method: l1-global, amounts: [0.2, 0.4, 0.6]}]")
    db = out / "results.db"
    mounted = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out))
    try:
        if mounted:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg)], cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while proc.poll() is None:
                if committed_cells(db) >= 1:
                    _fill(out)
                    break
                time.sleep(0.05)
            stdout, stderr = proc.communicate(timeout=600)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        else:
            site = tmp_path / "inject"
            site.mkdir()
            (site / "sitecustomize.py").write_text(_INJECT_ENOSPC)
            result = harness("run", "--config", str(cfg),
                             env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])})
        message = assert_environment_fault(result, 1, "database or disk is full", "--resume",
                                           f"1 finished cell(s) are safe in {db}")
        assert "the sweep stopped after 1 of 4 cell(s)" in message, message
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells WHERE status = 'ok'").fetchone()[0] == 1
        (out / "filler").unlink(missing_ok=True)
        resumed = harness("run", "--config", str(cfg), "--resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "1 skipped" in " ".join(resumed.stdout.split())
        rows = sqlite3.connect(db).execute(
            "SELECT COUNT(*), COUNT(DISTINCT key), SUM(status = 'ok') FROM cells").fetchone()
        assert rows == (4, 4, 4)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(out)], capture_output=True, check=False)


# ---------------------------------------------------------------------------------- one writer per --out


@pytest.mark.slow
def test_second_sweep_into_a_locked_out_is_refused_before_work(tmp_path: Path) -> None:
    """This test process holds the directory's lock (as a running sweep does): a sweep into it is refused."""
    from harness.measure.locks import OutDirLock

    out = tmp_path / "out"
    cfg = _tiny_sweep(tmp_path, out)
    with OutDirLock(out):
        proc = harness("run", "--config", str(cfg))
    assert_one_line_error(proc, f"{out} is being written by another harness process (pid {os.getpid()})",
                          "--wait")
    assert not (out / "results.db").exists()


@pytest.mark.slow
def test_two_sweeps_into_one_out_never_measure_a_cell_twice(tmp_path: Path) -> None:
    """Two real processes: the second (--wait) queues behind the first and skips every cell it finished."""
    out = tmp_path / "out"
    cfg = _tiny_sweep(tmp_path, out, batch_sizes="[1, 2, 3]", iterations=100)
    first = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock_file = out / ".harness.lock"
    while first.poll() is None and not (lock_file.exists() and lock_file.read_text().startswith(f"{first.pid} ")):
        time.sleep(0.05)
    second = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg), "--wait"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    db = out / "results.db"
    measured = sqlite3.connect(db).execute("SELECT key, finished_at FROM cells ORDER BY key").fetchall()
    assert len(measured) == 3
    out2, err2 = second.communicate(timeout=600)
    assert second.returncode == 0, out2 + err2
    assert "0 ok, 0 failed, 3 skipped" in " ".join(out2.split()), out2
    assert sqlite3.connect(db).execute("SELECT key, finished_at FROM cells ORDER BY key").fetchall() == measured


# ---------------------------------------------------------------------------------- custom model preflight

_CUSTOM = """
import torch
from torch import nn

def good():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5)).eval()

good.input_size = 32

def not_a_module():
    return {"weights": 1}

def wrong_shape():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 20 * 20, 5))
    return net

NOT_CALLABLE = 3
"""


def _preflight(tmp_path: Path, model: str) -> None:
    from harness.config import load_config
    from harness.sweep.driver import preflight

    config = load_config(None, {"models": [model], "weights": "random", "datasets": ["shapes"],
                                "data_root": tmp_path / "data", "cache_dir": tmp_path / "cache",
                                "out_dir": tmp_path / "out"})
    preflight(config)


@pytest.mark.parametrize("factory, source, reason", [
    ("good", "def good(:\n    pass\n", "has a syntax error at line 1"),
    ("missing", _CUSTOM, "'missing' is not defined in"),
    ("NOT_CALLABLE", _CUSTOM, "'NOT_CALLABLE' in"),
    ("not_a_module", _CUSTOM, "returned dict, not a torch.nn.Module"),
    ("wrong_shape", _CUSTOM, "a forward pass on the example input (1, 3, 224, 224) failed"),
])
def test_custom_model_preflight_names_the_file_and_the_reason(tmp_path: Path, factory: str, source: str,
                                                             reason: str) -> None:
    from harness.errors import HarnessError

    src = tmp_path / "nets.py"
    src.write_text(source)
    with pytest.raises(HarnessError) as info:
        _preflight(tmp_path, f"{src}:{factory}")
    assert str(src) in str(info.value) and reason in str(info.value), info.value


@pytest.mark.slow
def test_custom_model_preflight_accepts_a_working_factory(tmp_path: Path) -> None:
    src = tmp_path / "nets.py"
    src.write_text(_CUSTOM.replace("good.input_size = 32", ""))
    (tmp_path / "nets.py").write_text(_CUSTOM.replace("def good():\n    return nn.Sequential(nn.Flatten(), "
                                                      "nn.Linear(3 * 32 * 32, 5)).eval()",
                                                      "def good():\n    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), "
                                                      "nn.Flatten(), nn.Linear(3, 5))\n    return net.eval()"))
    _preflight(tmp_path, f"{src}:good")


@pytest.mark.slow
def test_broken_custom_model_fails_before_any_cell_runs(tmp_path: Path) -> None:
    src = tmp_path / "broken.py"
    src.write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2\n")
    out = tmp_path / "out"
    proc = harness("run", "--model", f"{src}:build", "--weights", "random", "--dataset", "shapes",
                   "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    assert_one_line_error(proc, f"custom model {src}:build", "syntax error at line 4")
    assert not (out / "results.db").exists(), "no cell may run before the preflight"


# ---------------------------------------------------------------------------------- caches through real sweeps

_RECORD_CONNECT = """
import os, socket
def _refuse(self, *args, **kwargs):
    with open(os.environ["PQ_CONNECT_LOG"], "a") as fh:
        fh.write(repr(args) + "\\n")
    raise OSError("network blocked by the test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def _cells(out: Path) -> list[dict]:
    import json

    return json.loads((out / "results.json").read_text())


def _int8_sweep(tmp_path: Path, cache: Path, out: Path, name: str) -> Path:
    return write_config(tmp_path / name, f"""
models: [tinycnn]
datasets: [shapes]
batch_sizes: [1]
backends: {{ort-cpu: [fp32, int8]}}
timing: {{min_seconds: 0, warmup_seconds: 0, warmup: 1, iterations: 5, repeats: 1}}
calibration: {{method: minmax, count: 24, seed: 3}}
max_eval_samples: 32
data_root: {tmp_path / 'data'}
cache_dir: {cache}
out_dir: {out}
""")


@pytest.fixture(scope="module")
def cached_runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict:
    """An int8 sweep on a cache without calibration artifacts, then the same sweep again with every
    socket connect refused and recorded (a cached run must need no network)."""
    import shutil

    tmp = tmp_path_factory.mktemp("cached-runs")
    cache = tmp / "cache"
    shutil.copytree(shared_cache, cache, ignore=shutil.ignore_patterns("calib", "*.lock"))
    first = harness("run", "--config", str(_int8_sweep(tmp, cache, tmp / "first", "a.yaml")))
    assert first.returncode == 0, first.stdout + first.stderr
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_RECORD_CONNECT)
    log = tmp / "connects.log"
    second = harness("run", "--config", str(_int8_sweep(tmp, cache, tmp / "second", "b.yaml")),
                     env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "PQ_CONNECT_LOG": str(log)})
    return {"tmp": tmp, "cache": cache, "first": _cells(tmp / "first"), "second": second,
            "connects": log.read_text() if log.exists() else ""}


@pytest.mark.slow
def test_a_cached_run_opens_no_network_connection(cached_runs: dict) -> None:
    second = cached_runs["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert cached_runs["connects"] == "", "a cached run tried to connect: " + cached_runs["connects"]
    assert all(c["status"] == "ok" for c in _cells(cached_runs["tmp"] / "second"))


@pytest.mark.slow
def test_prep_time_counts_calibration_built_in_activate_and_zero_when_reused(cached_runs: dict) -> None:
    first = {c["identity"]["precision"]: c["result"] for c in cached_runs["first"]}
    second = {c["identity"]["precision"]: c["result"] for c in _cells(cached_runs["tmp"] / "second")}
    built = first["int8"]["prep_phases_s"]["calibrate"]
    assert built > 0, first["int8"]["prep_phases_s"]
    assert first["int8"]["prep_time_s"] >= built + first["int8"]["prep_phases_s"]["export"]
    assert first["fp32"]["prep_phases_s"]["calibrate"] == 0  # fp32 sessions never calibrate
    assert second["int8"]["prep_phases_s"]["calibrate"] == 0, "the cached Q/DQ model was reused"
    assert second["int8"]["prep_time_s"] < built


@pytest.mark.slow
def test_every_calibration_image_is_from_the_train_split(cached_runs: dict) -> None:
    from calib.calibset import file_list_hash
    from harness.data.registry import open_split

    cache = cached_runs["cache"]
    train = open_split("shapes", "train", data_root=cached_runs["tmp"] / "data", cache_dir=cache)
    val = open_split("shapes", "val", data_root=cached_runs["tmp"] / "data", cache_dir=cache)
    int8 = [c for c in cached_runs["first"] if c["identity"]["precision"] == "int8"]
    assert int8
    for cell in int8:
        record = cell["result"]["artifact_notes"]["calibration"]
        root = Path(record["root"])
        files = [root / f for f in record["files"]]
        assert len(files) == record["provenance"]["count"] == 24
        assert file_list_hash(files, root) == record["provenance"]["calib_file_list_hash"]
        train_files = {Path(p).resolve() for p, _ in train.samples}
        val_files = {Path(p).resolve() for p, _ in val.samples}
        assert all(f.resolve() in train_files for f in files)
        assert not {f.resolve() for f in files} & val_files


@pytest.mark.slow
def test_damaged_caches_are_rebuilt_and_every_cell_is_ok(cached_runs: dict) -> None:
    """Truncated ONNX export, garbled tinycnn weights, truncated Q/DQ model: rebuilt, noted, all cells ok."""
    tmp, cache = cached_runs["tmp"], cached_runs["cache"]
    damaged = []
    # What this sweep reads (the copied shared cache may hold other tests' exports too, never read here).
    exports = sorted({Path(c["result"]["artifact_notes"]["onnx_export"]["path"]) for c in cached_runs["first"]})
    for found, how in ((exports, "truncate"), (sorted(cache.glob("models/tinycnn-*.pt")), "garble"),
                       (sorted(cache.glob("calib/qdq-*-cpu.onnx")), "truncate")):
        assert found and all(p.is_relative_to(cache) for p in found), (found, how)
        for path in found:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x80\x02garbage" + data[10:])
            damaged.append(path)
    proc = harness("run", "--config", str(_int8_sweep(tmp, cache, tmp / "healed", "c.yaml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "weights_only" not in text and "Unpickling" not in text
    cells = _cells(tmp / "healed")
    assert len(cells) == 2 and all(c["status"] == "ok" for c in cells), cells
    for cell in cells:
        notes = " ".join(cell["result"]["artifact_notes"].get("cache_rebuilt", []))
        expected = [p for p in damaged if cell["identity"]["precision"] == "int8" or "qdq-" not in p.name]
        for path in expected:
            assert str(path) in notes, (path, notes)
    int8 = next(c for c in cells if c["identity"]["precision"] == "int8")
    assert int8["result"]["prep_phases_s"]["calibrate"] > 0  # the rebuild is counted
