"""The ONNX Runtime paths under every onnxruntime version an image pins.

The pins are read from ``docker/`` (``ARG ORT_GPU_VERSION=X.Y.*`` of each Dockerfile, ``onnxruntime==``
lines of the constraints files), so a new pin is tested without editing this file.  Each pinned
version's CPU wheel (``onnxruntime-gpu X.Y.*`` maps to the newest ``onnxruntime`` X.Y.z: the same
Python quantization tools) is installed once with ``pip install --no-deps --target`` under
``.harness-cache/ort-wheels/`` and the ORT tests (:data:`SELECTION`) run in a subprocess with that
directory first on ``PYTHONPATH``.  A version this interpreter already imports is covered by the
suite itself and is not run again.

Without the package index: skipped with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, onnxruntime_distribution

DOCKER = REPO / "docker"
WHEEL_CACHE = REPO / ".harness-cache" / "ort-wheels"

#: The ORT paths: export check, calibration, Q/DQ build, the TensorRT EP table, ort-cpu sessions and
#: profiles, ``harness calib``, an ort-cpu int8 cell end to end, FP8 Q/DQ models and fp8 cells on the CPU EP,
#: and the FP16/BF16 conversions (ONNX Runtime's float16 converter is the pinned version's).
SELECTION: tuple[str, ...] = (
    "tests/test_ort_paths.py",
    "tests/test_calib.py",
    "tests/test_onnx_export.py",
    "tests/test_ort_profile.py",
    "tests/test_backends_cpu.py",
    "tests/test_fp8_qdq.py",
    "tests/test_fp8_cells.py",
    "tests/test_typed_onnx.py",
    "tests/test_ort_fallback.py",
)

@dataclass(frozen=True)
class OrtPin:
    """One onnxruntime version an image pins: ``1.20.*`` (a series) or ``1.32.0`` (exact)."""

    spec: str
    source: str

    @property
    def requirement(self) -> str:
        return f"onnxruntime=={self.spec}"

    def matches(self, version: str) -> bool:
        if self.spec.endswith(".*"):
            return version.startswith(self.spec[:-1])
        return version == self.spec

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.spec))


def pinned_onnxruntime(docker: Path) -> list[OrtPin]:
    """Every onnxruntime / onnxruntime-gpu version pinned under ``docker`` (one per spec, lowest first)."""
    found: dict[str, OrtPin] = {}
    for dockerfile in sorted(docker.glob("Dockerfile*")):
        for spec in re.findall(r"^ARG ORT_GPU_VERSION=(\S+)\s*$", dockerfile.read_text(), re.M):
            found.setdefault(spec, OrtPin(spec, dockerfile.name))
    for constraints in sorted(docker.glob("constraints*.txt")):
        for spec in re.findall(r"^onnxruntime(?:-gpu)?==(\S+)\s*$", constraints.read_text(), re.M):
            found.setdefault(spec, OrtPin(spec, constraints.name))
    return sorted(found.values(), key=lambda p: p.sort_key)


def running_onnxruntime() -> str | None:
    dist = onnxruntime_distribution()
    return dist.version if dist is not None else None


def _matrix() -> list[OrtPin]:
    running = running_onnxruntime()
    return [p for p in pinned_onnxruntime(DOCKER) if running is None or not p.matches(running)]


def index_reachable(index_url: str | None = None, timeout: float = 15.0) -> bool:
    """Whether the package index answers for onnxruntime (pip's own output does not always say so)."""
    url = (index_url or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/") + "/onnxruntime/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # honours the *_proxy variables
            return response.status == 200
    except (OSError, ValueError):
        return False


class WheelUnavailable(Exception):
    def __init__(self, output: str, *, unreachable: bool) -> None:
        super().__init__(output)
        self.output, self.unreachable = output, unreachable


def installed_wheel(pin: OrtPin, cache: Path = WHEEL_CACHE) -> Path:
    """The directory holding ``pin``'s CPU wheel for this Python, installed once (atomically) and reused."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    target = cache / f"onnxruntime-{pin.spec.replace('*', 'x')}-{tag}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".partial-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # --no-deps: numpy, protobuf, flatbuffers, sympy and packaging come from this environment.  No
    # constraint files: a global one may pin onnxruntime to the installed version.
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(tmp),
                           pin.requirement], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WheelUnavailable(proc.stdout + proc.stderr, unreachable=not index_reachable())
    os.replace(tmp, target)  # only a complete install ever carries the final name
    return target


def wheel_version(directory: Path) -> str:
    (info,) = directory.glob("onnxruntime-*.dist-info")
    return info.name[len("onnxruntime-"):-len(".dist-info")]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_instead_of_failing(exc: WheelUnavailable, ci: bool) -> bool:
    """Only an unreachable package index outside CI is a skip; anything else (no such wheel) fails."""
    return exc.unreachable and not ci


# -- the pins ---------------------------------------------------------------------------------


def test_pins_are_read_from_dockerfiles_and_constraints(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.a").write_text("FROM x\nARG ORT_GPU_VERSION=1.21.*\nRUN pip install onnxruntime-gpu\n")
    (tmp_path / "Dockerfile.b").write_text("FROM x\n# ARG ORT_GPU_VERSION=1.18.* (a comment, not a pin)\n"
                                           "ARG ORT_GPU_VERSION=1.20.*\n")
    (tmp_path / "Dockerfile.c").write_text("FROM x\n")
    (tmp_path / "constraints-c.txt").write_text("onnx==1.23.2\nonnxruntime==1.32.0\nonnxruntime-extensions==0.1\n")
    (tmp_path / "constraints-a.txt").write_text("onnxruntime-gpu==1.21.*\n")
    pins = pinned_onnxruntime(tmp_path)
    assert [(p.spec, p.source) for p in pins] == [("1.20.*", "Dockerfile.b"), ("1.21.*", "Dockerfile.a"),
                                                  ("1.32.0", "constraints-c.txt")]
    series, exact = pins[0], pins[2]
    assert series.requirement == "onnxruntime==1.20.*" and exact.requirement == "onnxruntime==1.32.0"
    assert series.matches("1.20.1") and not series.matches("1.2.0") and not series.matches("1.21.0")
    assert exact.matches("1.32.0") and not exact.matches("1.32.1")


def test_the_images_pin_onnxruntime() -> None:
    """The matrix is not empty by accident: the v100 and a100 images pin onnxruntime-gpu series."""
    sources = {p.source for p in pinned_onnxruntime(DOCKER) if p.spec.endswith(".*")}
    assert {"Dockerfile.v100", "Dockerfile.a100"} <= sources


def _lower_bound(requirements: list[str], name: str) -> str:
    (req,) = [r for r in requirements if re.match(rf"{re.escape(name)}\s*[<>=!~]", r)]
    (bound,) = re.findall(r">=\s*([\d.]+)", req)
    return bound


def test_pyproject_lower_bounds_are_the_lowest_version_tested() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lowest = pinned_onnxruntime(DOCKER)[0]
    series = ".".join(re.findall(r"\d+", lowest.spec)[:2])
    for extra, name in (("ort-cpu", "onnxruntime"), ("ort-gpu", "onnxruntime-gpu")):
        bound = _lower_bound(extras[extra], name)
        assert bound in (series, f"{series}.0"), f"{name}>={bound} in [{extra}]; the lowest tested is {lowest.spec}"


def test_ci_runs_the_readme_test_command_with_ci_set() -> None:
    """CI (``.ci/run``) runs README's test command, the second command of its first code block, as CI."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block is not None
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    script = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "pytest" in commands[1] and commands[1] in script
    assert 'export CI="${CI:-true}"' in script[:script.index(commands[1])]


@pytest.mark.slow
def test_unreachable_index_skips_outside_ci_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = "http://127.0.0.1:9"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, dead)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PIP_FIND_LINKS", "")  # no local wheel directory may satisfy the pin
    # Nor a local index from the machine's pip configuration: the dead proxy's index is the only one.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"{dead}/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(WheelUnavailable) as info:
        installed_wheel(OrtPin("1.20.*", "Dockerfile.test"), tmp_path / "cache")
    assert info.value.unreachable, info.value.output[-2000:]
    assert skip_instead_of_failing(info.value, ci=False) and not skip_instead_of_failing(info.value, ci=True)
    assert not any((tmp_path / "cache").iterdir()), "a failed install leaves nothing behind"
    missing = WheelUnavailable("ERROR: No matching distribution found for onnxruntime==0.0.*", unreachable=False)
    assert not skip_instead_of_failing(missing, ci=False)


# -- the matrix -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("pin", _matrix(), ids=lambda p: f"onnxruntime-{p.spec}")
def test_ort_paths_under_pinned_onnxruntime(pin: OrtPin, shared_cache: Path, tmp_path: Path) -> None:
    try:
        wheel = installed_wheel(pin)
    except WheelUnavailable as exc:
        last = exc.output.strip().splitlines()[-1] if exc.output.strip() else "no output"
        if skip_instead_of_failing(exc, in_ci()):
            pytest.skip(f"cannot reach the package index for {pin.requirement} ({last})")
        pytest.fail(f"pip could not install {pin.requirement} (pinned in docker/{pin.source}):\n{exc.output[-3000:]}")
    version = wheel_version(wheel)
    assert pin.matches(version), (pin, version)
    # A copy of the session's cache (shapes set, tinycnn weights): reused, while what this onnxruntime builds
    # (calibration artifacts of its own provenance) never replaces what the rest of the session relies on.
    cache = tmp_path / "harness-cache"
    shutil.copytree(shared_cache, cache, symlinks=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(wheel), str(REPO)]), "PQ_TEST_CACHE": str(cache)}

    probe = subprocess.run([sys.executable, "-c", "import onnxruntime, onnxruntime.quantization as q; "
                            "print(onnxruntime.__version__); print(onnxruntime.__file__)"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    imported, location = probe.stdout.split()
    assert imported == version and Path(location).resolve().is_relative_to(wheel.resolve()), probe.stdout

    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", *SELECTION],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert f"onnxruntime {version} at {wheel.resolve()}" in output, output[-3000:]
    assert run.returncode == 0, f"the ORT tests failed under onnxruntime {version}:\n{output[-6000:]}"
    assert re.search(r"\b\d+ passed\b", output) and " failed" not in output.splitlines()[-1], output[-3000:]
