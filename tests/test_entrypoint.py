"""docker/entrypoint.sh run for real by /bin/sh, with a stand-in for NGC's /opt/nvidia/nvidia_entrypoint.sh
(which sources its entrypoint.d parts, prints a banner to stdout and execs its arguments)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parent.parent / "docker" / "entrypoint.sh"
FAKE_NGC = """#!/bin/bash
echo "=============="
echo "== PyTorch =="
echo "NVIDIA Release 25.01 (build 1)"
export LD_LIBRARY_PATH="/usr/local/cuda/compat/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
"""


def run(tmp_path: Path, *command: str, volumes: list[Path] | None = None, env: dict[str, str] | None = None,
        as_nobody: bool = False, read_volumes: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    ngc = tmp_path / "nvidia_entrypoint.sh"
    ngc.write_text(FAKE_NGC)
    ngc.chmod(0o755)
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HARNESS_NGC_ENTRYPOINT": str(ngc),
            "HARNESS_VOLUMES": " ".join(map(str, volumes or [])),
            "HARNESS_READ_VOLUMES": " ".join(map(str, read_volumes or [])), **(env or {})}
    prefix: list[str] = []
    if as_nobody:
        prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    return subprocess.run([*prefix, "/bin/sh", str(ENTRYPOINT), *command], env=full, capture_output=True,
                          text=True, timeout=60)


def test_stdout_is_the_commands_alone_and_the_ngc_environment_is_kept(tmp_path: Path) -> None:
    """`docker compose run --rm hw --json > hw.json` must be JSON: the banner goes to stderr, while what
    the NGC parts set up (CUDA forward compatibility's library path) reaches the command."""
    proc = run(tmp_path, "sh", "-c", 'printf \'{"ld": "%s"}\\n\' "$LD_LIBRARY_PATH"; echo warn >&2; exit 3')
    assert proc.stdout == '{"ld": "/usr/local/cuda/compat/lib"}\n'
    assert proc.returncode == 3  # the command's own status
    assert "NVIDIA Release 25.01" in proc.stderr and proc.stderr.endswith("warn\n")


def test_the_command_gets_no_extra_file_descriptor(tmp_path: Path) -> None:
    proc = run(tmp_path, "sh", "-c", 'if [ -e /proc/$$/fd/3 ]; then echo fd3-open; else echo fd3-closed; fi')
    assert proc.stdout == "fd3-closed\n"


def test_ray_with_token_auth_but_no_token_stops_with_one_line(tmp_path: Path) -> None:
    proc = run(tmp_path, "echo", "ray started", env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ""})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "HARNESS_RAY_TOKEN is not set" in proc.stderr
    ok = run(tmp_path, "echo", "ray started", env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 64})
    assert ok.returncode == 0 and ok.stdout == "ray started\n"
    assert run(tmp_path, "echo", "no ray").stdout == "no ray\n"  # other services need no token


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the entrypoint as another uid")
def test_a_volume_the_uid_cannot_write_stops_with_one_line_and_the_fix(tmp_path: Path) -> None:
    """As when dockerd created a missing bind source owned by root: one line, the chown fix, exit 2."""
    base = Path(tempfile.mkdtemp(prefix="pq-volumes-", dir="/tmp"))  # traversable by any uid
    base.chmod(0o755)
    writable, root_owned = base / "results", base / "cache"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    root_owned.mkdir(mode=0o755)
    home = base / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    ok = run(tmp_path, "echo", "ran", volumes=[writable], as_nobody=True, env={"HOME": str(home)})
    assert ok.returncode == 0 and ok.stdout == "ran\n", ok.stderr
    bad = run(tmp_path, "echo", "ran", volumes=[writable, root_owned], as_nobody=True, env={"HOME": str(home)})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert f"{root_owned} is not writable by uid 65534 (owner 0:0)" in bad.stderr
    assert "sudo chown -R 65534:65534" in bad.stderr and "HARNESS_UID=$(id -u)" in bad.stderr
    shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the entrypoint as another uid")
def test_the_dataset_volume_needs_only_to_be_readable(tmp_path: Path) -> None:
    """A shared dataset directory owned by someone else (or mounted read-only) is fine: nothing but
    `harness data fetch` writes there. One it cannot read stops the container with one line."""
    base = Path(tempfile.mkdtemp(prefix="pq-volumes-", dir="/tmp"))
    base.chmod(0o755)
    data, home = base / "data", base / "home"
    data.mkdir(mode=0o755)  # root's, not writable by uid 65534
    home.mkdir()
    home.chmod(0o777)
    try:
        ok = run(tmp_path, "echo", "ran", read_volumes=[data], as_nobody=True, env={"HOME": str(home)})
        assert ok.returncode == 0 and ok.stdout == "ran\n", ok.stderr
        data.chmod(0o700)
        bad = run(tmp_path, "echo", "ran", read_volumes=[data], as_nobody=True, env={"HOME": str(home)})
        assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1, bad.stderr
        assert f"{data} is not readable by uid 65534 (owner 0:0, mode 700)" in bad.stderr
    finally:
        shutil.rmtree(base)


def test_the_images_check_data_for_reading_only() -> None:
    """Without the test hooks the entrypoint checks /cache, /results and /torch for writing, /data for reading."""
    text = ENTRYPOINT.read_text()
    assert 'for dir in ${HARNESS_VOLUMES:-/cache /results /torch}; do' in text
    assert 'for dir in ${HARNESS_READ_VOLUMES:-/data}; do' in text


def test_entrypoint_is_executable_and_the_images_ship_it() -> None:
    assert ENTRYPOINT.stat().st_mode & 0o111
    for variant in ("v100", "a100", "trt11"):
        text = (ENTRYPOINT.parent / f"Dockerfile.{variant}").read_text()
        assert "chmod 0755 /opt/pq-harness/docker/entrypoint.sh" in text, variant
