"""Ray stays optional: the local executor never imports it, and without it `--executor ray` is a
one-line error naming the extra. Runs whether or not Ray is installed (Ray is hidden here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, repo_env

HIDE_RAY = "import sys; sys.modules['ray'] = None\n"  # `import ray` now raises ImportError


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = repo_env()
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_local_executor_and_cli_never_import_ray() -> None:
    done = _python("import sys\n"
                   "import harness.cli, harness.sweep.driver, harness.sweep.executors, harness.sweep.executors.local\n"
                   "from harness.config import load_config\n"
                   "assert load_config(None, {}).executor.kind == 'local'\n"
                   "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_ray_executor_without_ray_is_a_one_line_error_naming_the_extra(tmp_path) -> None:
    done = _python(HIDE_RAY + "from harness.cli import main\nsys.argv[0] = 'harness'\nmain()\n",
                   "run", "--executor", "ray", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "the ray executor needs Ray" in lines[0] and "pip install 'pq-harness[ray]'" in lines[0]
    assert not (tmp_path / "out").exists()  # failed before any work
