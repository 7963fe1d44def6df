"""compose.yaml and the Dockerfiles, checked as text (no Docker engine needed)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from harness.gpu.capabilities import TRT_LAST_FOR_VOLTA, check_ort_trt_pair, parse_version

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKER = ROOT / "docker"
GPU_VARIANTS = ("v100", "a100", "trt11")
NGC_TAG = re.compile(r"^nvcr\.io/nvidia/(pytorch|tensorrt):(\d{2})\.(\d{2})-py3$")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} / ${VAR} with the given environment."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, text)


def _dockerfile(variant: str) -> str:
    return (DOCKER / f"Dockerfile.{variant}").read_text()


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not current):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    if current:
        out.append(current)
    return out


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instr in _instructions(text):
        if instr.upper().startswith("LABEL "):
            for key, value in re.findall(r'([\w.\-]+)="([^"]*)"', instr):
                labels[key] = value
    return labels


def _from_images(text: str) -> list[str]:
    return [i.split()[1] for i in _instructions(text) if i.upper().startswith("FROM ")]


# ---------------------------------------------------------------------------------- compose


def test_compose_services_and_entrypoints() -> None:
    services = _compose()["services"]
    assert set(services) >= {"harness", "hw"}
    harness = services["harness"]
    # `docker compose run harness --backend trt-native --precision int8` appends to `harness run`
    assert harness["entrypoint"][-2:] == ["harness", "run"]
    assert "command" not in harness
    assert services["hw"]["entrypoint"][-2:] == ["harness", "hw"]
    # the NGC entrypoint stays first (CUDA forward compatibility)
    assert harness["entrypoint"][0] == "/opt/nvidia/nvidia_entrypoint.sh"


@pytest.mark.parametrize("service", ["harness", "hw"])
def test_compose_gpu_reservation(service: str) -> None:
    svc = _compose()["services"][service]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


@pytest.mark.parametrize("service", ["harness", "hw"])
def test_compose_volumes_environment_and_shm(service: str) -> None:
    svc = _compose()["services"][service]
    targets = {v.rsplit(":", 1)[-1] if not v.endswith(":ro") else v.split(":")[-2] for v in svc["volumes"]}
    assert {"/data", "/root/.cache/torch", "/cache", "/results"} <= targets
    env = svc["environment"]
    assert env["HARNESS_DATA_ROOT"] == "/data"
    assert env["HARNESS_CACHE_DIR"] == "/cache"
    assert env["HARNESS_OUT_DIR"] == "/results"
    assert env["TORCH_HOME"] == "/root/.cache/torch"
    assert "shm_size" in svc or svc.get("ipc") == "host"


def test_compose_build_selects_dockerfile_by_variable() -> None:
    svc = _compose()["services"]["harness"]
    dockerfile = svc["build"]["dockerfile"]
    assert "${HARNESS_GPU:-a100}" in dockerfile
    assert (ROOT / _interpolate(dockerfile)).is_file()  # default
    for variant in GPU_VARIANTS:
        path = ROOT / _interpolate(dockerfile, {"HARNESS_GPU": variant})
        assert path.is_file(), path
    assert svc["build"]["context"] == "."
    image = _interpolate(svc["image"], {"HARNESS_GPU": "v100"})
    assert image == "pq-harness:v100" and "latest" not in svc["image"]


# ---------------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_from_is_a_pinned_ngc_tag(variant: str) -> None:
    images = _from_images(_dockerfile(variant))
    assert len(images) == 1
    image = images[0]
    assert "latest" not in image and "@" not in image
    assert NGC_TAG.match(image), image
    assert _labels(_dockerfile(variant))["pq.base_image"] == image


def test_v100_image_has_trt_at_most_10_4() -> None:
    text = _dockerfile("v100")
    image = _from_images(text)[0]
    assert image in ("nvcr.io/nvidia/pytorch:24.09-py3", "nvcr.io/nvidia/pytorch:24.08-py3")
    labels = _labels(text)
    assert parse_version(labels["pq.trt_version"])[:2] <= TRT_LAST_FOR_VOLTA
    assert "check_image.py trt --min 10.0 --max 10.4" in text  # the build enforces it
    assert "24.08" in text  # the documented fallback
    assert "not confirmed" in text.lower()


def test_a100_image_has_trt_10() -> None:
    text = _dockerfile("a100")
    labels = _labels(text)
    assert parse_version(labels["pq.trt_version"])[0] == 10
    assert "--max 10.99" in text
    assert "not confirmed" in text.lower()


def test_trt11_image_is_trt_11() -> None:
    labels = _labels(_dockerfile("trt11"))
    assert parse_version(labels["pq.trt_version"])[0] == 11


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_onnxruntime_gpu_pin_pairs_with_trt(variant: str) -> None:
    text = _dockerfile(variant)
    m = re.search(r"^ARG ORT_GPU_VERSION=(\S+)$", text, re.M)
    assert m, "onnxruntime-gpu version pin missing"
    pin = m.group(1)
    assert re.fullmatch(r"1\.\d+\.\*", pin)
    assert '"onnxruntime-gpu==${ORT_GPU_VERSION}"' in text
    labels = _labels(text)
    assert labels["pq.ort_gpu_version"] == pin
    check = check_ort_trt_pair(pin.replace("*", "0"), labels["pq.trt_version"])
    assert check.ok is True, check.reason


def test_v100_pairing_is_ort_1_20() -> None:
    assert "ARG ORT_GPU_VERSION=1.20.*" in _dockerfile("v100")


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_torch_is_never_reinstalled(variant: str) -> None:
    instructions = _instructions(_dockerfile(variant))
    pip_lines = [i for i in instructions if re.search(r"\bpip3?\b.*\binstall\b", i)]
    assert pip_lines
    for line in pip_lines:
        assert not re.search(r"(?<![\w-])torch(vision|audio)?(?![\w-])", line), line
    # constraints pinning torch come before the first pip install
    env_index = next(i for i, s in enumerate(instructions) if "PIP_CONSTRAINT=" in s)
    constraints_index = next(i for i, s in enumerate(instructions) if "check_image.py constraints" in s)
    first_install = next(i for i, s in enumerate(instructions) if s in pip_lines)
    assert env_index < first_install and constraints_index < first_install
    assert any("check_image.py final --constraints" in s for s in instructions[first_install:])


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_project_installed_with_gpu_extra(variant: str) -> None:
    text = _dockerfile(variant)
    m = re.search(r'pip install -e "/opt/pq-harness\[([\w-]+)\]"', text)
    assert m, "the project is not installed"
    extra = m.group(1)
    pyproject = ROOT / "pyproject.toml"
    if pyproject.exists():
        tomllib = pytest.importorskip("tomllib")
        project = tomllib.loads(pyproject.read_text())["project"]
        extras = project.get("optional-dependencies", {})
        assert extra in extras, f"pyproject.toml has no [{extra}] extra (has {sorted(extras)})"
        assert any(d.startswith("onnxruntime-gpu") for d in extras[extra])
        # a hard dependency on the CPU-only onnxruntime would sit beside onnxruntime-gpu
        assert not any(re.match(r"onnxruntime(?![\w-])", d) for d in project.get("dependencies", []))
        assert "harness" in project.get("scripts", {})
    assert "COPY . /opt/pq-harness" in text
    ignore = (DOCKER / f"Dockerfile.{variant}.dockerignore").read_text().split()
    assert ".git" in ignore and "results" in ignore and ".harness-cache" in ignore
    for needed in ("harness", "backends", "calib", "pyproject.toml"):
        assert needed not in ignore


# ---------------------------------------------------------------------------------- check_image.py


def _check_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_image", DOCKER / "check_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_image_helpers(tmp_path: Path) -> None:
    ci = _check_image()
    assert ci.vtuple("10.4.0.26") == (10, 4, 0, 26)
    assert ci.vtuple("2.5.0a0+b465a5843b") == (2, 5, 0)
    out = tmp_path / "constraints.txt"
    ci.main(["constraints", str(out)])
    lines = out.read_text().split()
    assert any(line.startswith("torch==") for line in lines)
    assert all("==" in line for line in lines)


def test_check_image_trt_range_fails_without_tensorrt() -> None:
    ci = _check_image()
    version, _source = ci.tensorrt_version()
    if version is not None:  # pragma: no cover - machines with TensorRT
        pytest.skip("TensorRT is installed here")
    with pytest.raises(SystemExit):
        ci.main(["trt", "--min", "10.0", "--max", "10.4"])
