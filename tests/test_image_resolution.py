"""Every image's pip steps, resolved by pip's own resolver against what its base image ships.

docker/resolve_image.py reads each Dockerfile's stages, builds stub wheels for the base image's torch,
torchvision and tensorrt (version strings and requirements from docker/bases/*.json) and for the
project (pyproject.toml's requirements), generates the constraints with check_image.py's own code, as
the Dockerfile's `constraints` step does inside the image, and runs `pip install --dry-run
--ignore-installed --only-binary=:all:` for the image's Python and manylinux platform, step by step.
Proven: each image's installs resolve against the record, and the lock pins all they install. Not
proven: that the record is the image (a Docker host confirms it: the build prints every difference).

Needs the package index (metadata only): without it the resolutions are skipped with the reason,
except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
VARIANTS = ("a100", "v100", "trt11")
TARGETS = ("harness", "ray")
#: The Python each image's base ships (and each lock is resolved for).
IMAGE_PYTHON = {"a100": "3.12", "v100": "3.10", "trt11": "3.12"}


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ri = _module("resolve_image", DOCKER / "resolve_image.py")
ci = _module("check_image", DOCKER / "check_image.py")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def verdict(resolution: object, ci_run: bool) -> str:
    """"pass", "skip" (the index cannot be reached, outside CI) or "fail"."""
    if resolution.ok:  # type: ignore[attr-defined]
        return "pass"
    return "skip" if resolution.unreachable and not ci_run else "fail"  # type: ignore[attr-defined]


def _resolve_or_skip(variant: str, target: str, **kwargs: object) -> object:
    resolution = ri.resolve_image(variant, target, **kwargs)
    outcome = verdict(resolution, in_ci())
    if outcome == "skip":
        pytest.skip(f"the package index is unreachable ({resolution.summary()})")
    return resolution


# ---------------------------------------------------------------------------------- the records


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_dockerfile_copies_the_record_of_its_base_image(variant: str) -> None:
    spec = ri.image_steps(DOCKER / f"Dockerfile.{variant}", "harness")
    record = ri.load_record(spec.record)  # every value names a source and whether it was seen in the image
    assert record.image == spec.base
    assert record.python_short == IMAGE_PYTHON[variant]
    assert {"torch", "torchvision", "tensorrt"} <= set(record.distributions)
    assert "numpy" in record.packages  # never replaced: NGC's torch is built against it
    if variant != "trt11":  # the image's TensorRT label is the record's (trt11 replaces it with TensorRT 11)
        label = re.search(r'pq\.trt_version="([\d.]+)"', (DOCKER / f"Dockerfile.{variant}").read_text()).group(1)
        assert record.distributions["tensorrt"].version.startswith(label + "."), (label, record.distributions)
    record_arg = spec.constraints[spec.constraints.index("--record") + 1]
    assert spec.context_path(record_arg) == spec.record  # the build compares the image with this record
    lock = (DOCKER / f"constraints-{variant}.txt").read_text()
    assert f"docker/bases/{spec.record.name}" in lock  # the lock says what it was resolved against


def test_a_record_value_without_a_source_is_refused(tmp_path: Path) -> None:
    raw = json.loads((DOCKER / "bases" / "pytorch-25.01.json").read_text())
    raw["packages"]["numpy"]["source"] = "hearsay"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ri.ResolveError, match="numpy: source 'hearsay'"):
        ri.load_record(bad)
    del raw["packages"]["numpy"]["source"]
    raw["packages"]["numpy"].update(source="pip-log")
    del raw["packages"]["numpy"]["confirmed"]
    bad.write_text(json.dumps(raw))
    with pytest.raises(ri.ResolveError, match="confirmed"):
        ri.load_record(bad)


def test_a_record_is_updated_from_the_images_pip_list(tmp_path: Path) -> None:
    record = tmp_path / "r.json"
    record.write_text((DOCKER / "bases" / "pytorch-24.09.json").read_text())
    freeze = "numpy==1.26.3\ntorch==2.5.0a0+b465a5843b.nv24.9\nProtobuf==4.24.4\nunrelated==1.0\n"
    raw = ri.record_from_freeze(record, freeze, "pip list in the image, 2026-12-04")
    assert raw["packages"]["numpy"] == {"version": "1.26.3", "source": "pip-freeze", "confirmed": True}
    assert raw["distributions"]["torch"]["version"] == "2.5.0a0+b465a5843b.nv24.9"
    assert raw["distributions"]["torch"]["requires"]  # requirements are kept
    assert raw["packages"]["protobuf"]["version"] == "4.24.4" and "protobuf" not in raw["not_recorded"]["names"]
    assert "unrelated" not in raw["packages"]
    record.write_text(json.dumps(raw))
    assert ri.load_record(record).packages["protobuf"] == "4.24.4"


# ---------------------------------------------------------------------------------- the Dockerfiles' steps


def test_the_steps_of_each_target() -> None:
    harness = ri.image_steps(DOCKER / "Dockerfile.a100", "harness")
    ray = ri.image_steps(DOCKER / "Dockerfile.a100", "ray")
    installs = [step.args for step in harness.steps if step.action == "install"]
    assert installs == [("onnxruntime-gpu==1.21.*", "nvidia-ml-py"), ("/opt/pq-harness[ort-gpu]",)]
    assert [step.args for step in ray.steps][len(harness.steps):] == [("/opt/pq-harness[ort-gpu,ray]",)]
    assert ri.image_steps(DOCKER / "Dockerfile.a100").steps == harness.steps  # harness is the default target
    assert harness.constraints[0] == "/etc/pq-harness/constraints.txt"
    assert harness.context_path("/opt/pq-harness-tools/constraints-a100.txt") == DOCKER / "constraints-a100.txt"
    trt11 = ri.image_steps(DOCKER / "Dockerfile.trt11", "harness")
    assert trt11.steps[0] == ri.PipStep("uninstall", ("tensorrt",), False)
    assert trt11.steps[1].args == ("tensorrt-cu12==11.4.0.106",)  # the global ARG's default, redeclared
    assert "--no-tensorrt" in trt11.constraints
    with pytest.raises(ri.ResolveError, match="no stage 'nope'"):
        ri.image_steps(DOCKER / "Dockerfile.a100", "nope")


def test_shell_commands_are_split_as_the_shell_splits_them() -> None:
    script = ('(python -m pip uninstall -y tensorrt || true) && python -m pip install "x==${V}" '
              '&& python -c "import a; print(1)" > /etc/x.conf && if python -m pip show y; then echo z; fi')
    assert ri._commands(script, {"V": "1.2"}) == [
        ["python", "-m", "pip", "uninstall", "-y", "tensorrt"], ["true"], ["python", "-m", "pip", "install", "x==1.2"],
        ["python", "-c", "import a; print(1)", ">", "/etc/x.conf"], ["python", "-m", "pip", "show", "y"], ["echo", "z"]]


def test_stub_wheels_resolve_offline_like_the_real_distributions(tmp_path: Path) -> None:
    """pip reads a stub's version string (a pre-release with a local part, as NGC's) and requirements."""
    stubs = tmp_path / "stubs"
    torch = ri.stub_wheel(stubs, "torch", "2.6.0a0+ecf3bae40a.nv25.1", ["sympy==1.13.1", "filelock"])
    ri.stub_wheel(stubs, "sympy", "1.13.1")
    ri.stub_wheel(stubs, "sympy", "1.14.0")
    ri.stub_wheel(stubs, "filelock", "3.16.1")
    with zipfile.ZipFile(torch) as zf:
        assert "Requires-Dist: sympy==1.13.1" in zf.read("torch-2.6.0a0+ecf3bae40a.nv25.1.dist-info/METADATA").decode()
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                           "--find-links", str(stubs), "--report", str(report), "--target", str(tmp_path / "t"),
                           "torch==2.6.0a0+ecf3bae40a.nv25.1", "sympy"],
                          capture_output=True, text=True, env=ri.pip_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert got == {"torch": "2.6.0a0+ecf3bae40a.nv25.1", "sympy": "1.13.1", "filelock": "3.16.1"}


def test_the_project_stub_carries_pyprojects_requirements(tmp_path: Path) -> None:
    wheel = ri.project_stub(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("METADATA"))
    assert "Name: pq-harness" in meta and "Provides-Extra: ray" in meta
    assert re.search(r'^Requires-Dist: ray>=2\.52; extra == "ray"$', meta, re.M)
    assert re.search(r"^Requires-Dist: torch>=2\.1$", meta, re.M)


# ---------------------------------------------------------------------------------- the constraints


def test_constraints_are_what_the_image_step_writes() -> None:
    """Generated by check_image.py's build_constraints from the record, as inside the image."""
    spec = ri.image_steps(DOCKER / "Dockerfile.a100", "harness")
    record = ri.load_record(spec.record)
    lines = ri.constraint_lines(ci, record, spec)
    base = lines[1:lines.index(ci.LOCK_HEADER)]
    assert base[0] == f"torch=={record.distributions['torch'].version}"
    assert f"tensorrt=={record.distributions['tensorrt'].version}" in base
    assert f"numpy=={record.packages['numpy']}" in base
    assert "sympy==1.13.1" in base  # NGC's torch pins it exactly: never moved
    locked = {ci.requirement_name(line): line for line in lines[lines.index(ci.LOCK_HEADER) + 1:]}
    lock = {ci.requirement_name(line): line for line in
                         (DOCKER / "constraints-a100.txt").read_text().splitlines() if "==" in line}
    # upgradable: the lock's version, not NGC's 23.2 (which `final` accepts where nothing needs packaging)
    assert locked["packaging"] == f"{lock['packaging']}  {ci.UPGRADE_MARK} {record.packages['packaging']}"
    assert locked["setuptools"] == f"setuptools=={record.packages['setuptools']}"  # recorded: the base's
    assert locked["numpy"] == "numpy<2"
    trt11 = ri.image_steps(DOCKER / "Dockerfile.trt11", "harness")
    assert not any(line.startswith("tensorrt==") for line in ri.constraint_lines(ci, record, trt11))


# ---------------------------------------------------------------------------------- the resolutions


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_image_resolves_against_its_base(variant: str, target: str, tmp_path: Path) -> None:
    resolution = _resolve_or_skip(variant, target, work=tmp_path)
    assert resolution.ok, f"Dockerfile.{variant} (target {target}): {resolution.summary()}\n{resolution.output[-3000:]}"
    spec = ri.image_steps(DOCKER / f"Dockerfile.{variant}", target)
    record = ri.load_record(spec.record)
    pins = {}
    for line in ri.constraint_lines(ci, record, spec):
        body = line.split("#", 1)[0].strip()
        if "==" in body:
            pins[ri.normalize(body.partition("==")[0])] = body.partition("==")[2].strip()
    stubs = {*record.distributions, "pq-harness", *ri.SDIST_ONLY}
    stubs |= {ri.normalize(dep.split("==")[0]) for deps in ri.SDIST_ONLY.values() for dep in deps}
    loose = {n: v for n, v in resolution.installed.items() if n not in stubs and pins.get(n) != v}
    onnxruntime = {"onnxruntime-gpu", "onnxruntime"} & set(loose)
    assert set(loose) == onnxruntime, f"constraints-{variant}.txt does not pin what the image installs: {loose}"
    if variant == "trt11":
        assert "onnxruntime-gpu" not in resolution.installed
    else:  # one ONNX Runtime flavour: nothing pulls in the CPU build beside onnxruntime-gpu
        assert "onnxruntime" not in resolution.installed and "onnxruntime-gpu" in resolution.installed
    assert ("ray" in resolution.installed) == (target == "ray")  # the default image carries no Ray
    assert "torch" in resolution.installed and resolution.installed["torch"] == record.distributions["torch"].version


def _toy_image(root: Path, lock: str, packages: dict[str, str]) -> None:
    """A build context whose Dockerfile, record and lock have the shape of the real ones."""
    (root / "docker" / "bases").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "pq-harness"\nversion = "0.1.0"\n'
                                         'dependencies = ["torch>=2.1", "rich>=13"]\n')
    raw = json.loads((DOCKER / "bases" / "pytorch-25.01.json").read_text())
    raw["packages"] = {name: {"version": v, "source": "pip-log", "confirmed": True} for name, v in packages.items()}
    (root / "docker" / "bases" / "toy.json").write_text(json.dumps(raw))
    (root / "docker" / "constraints-toy.txt").write_text(lock)
    (root / "docker" / "Dockerfile.toy").write_text(
        "FROM nvcr.io/nvidia/pytorch:25.01-py3 AS base\n"
        "COPY docker/check_image.py docker/constraints-toy.txt docker/bases/toy.json /opt/pq-harness-tools/\n"
        "RUN python /opt/pq-harness-tools/check_image.py constraints /etc/pq-harness/constraints.txt \\\n"
        "        --lock /opt/pq-harness-tools/constraints-toy.txt --record /opt/pq-harness-tools/toy.json\n"
        "COPY . /opt/pq-harness\n"
        'RUN python -m pip install -e "/opt/pq-harness"\n')


@pytest.mark.slow
def test_a_lock_the_base_image_cannot_meet_fails_with_pips_conflict(tmp_path: Path) -> None:
    """The failure this test exists for: rich 15 needs pygments>=2.13 while the record keeps the base
    image's older pygments. The same lock passes once the base ships a pygments it accepts."""
    _toy_image(tmp_path / "ctx", "numpy<2\nrich==15.0.0\npygments==2.21.0\nmarkdown-it-py==4.3.0\nmdurl==0.1.2\n",
               {"numpy": "1.26.4", "pygments": "2.10.0"})
    resolution = ri.resolve_image("toy", work=tmp_path / "w", docker=tmp_path / "ctx" / "docker")
    if verdict(resolution, in_ci()) == "skip":
        pytest.skip(f"the package index is unreachable ({resolution.summary()})")
    assert not resolution.ok
    assert "The user requested (constraint) pygments==2.10.0" in resolution.conflicts, resolution.output[-2000:]
    assert any(c.startswith("rich 15.0.0 depends on pygments") for c in resolution.conflicts)
    assert "pip step 1 cannot resolve" in resolution.summary()
    _toy_image(tmp_path / "ok", "numpy<2\nrich==15.0.0\npygments==2.21.0\nmarkdown-it-py==4.3.0\nmdurl==0.1.2\n",
               {"numpy": "1.26.4", "pygments": "2.19.1"})
    fixed = ri.resolve_image("toy", work=tmp_path / "w2", docker=tmp_path / "ok" / "docker")
    assert fixed.ok and fixed.installed["pygments"] == "2.19.1", fixed.summary()


@pytest.mark.slow
def test_an_unreachable_index_skips_outside_ci_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = "http://127.0.0.1:9"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, dead)
    monkeypatch.setenv("PIP_INDEX_URL", f"{dead}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    _toy_image(tmp_path / "ctx", "numpy<2\nrich==15.0.0\n", {"numpy": "1.26.4"})
    resolution = ri.resolve_image("toy", work=tmp_path / "w", docker=tmp_path / "ctx" / "docker")
    assert not resolution.ok and resolution.unreachable, resolution.output[-2000:]
    assert verdict(resolution, ci_run=False) == "skip" and verdict(resolution, ci_run=True) == "fail"
    conflict = ri.Resolution(False, 1, {}, ["x"], "", unreachable=False)
    assert verdict(conflict, ci_run=False) == "fail"  # a real conflict is never skipped
