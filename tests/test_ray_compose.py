"""The compose profile `ray` (checked as text: no Docker engine here): a head, a worker and the
driver from the same image as `harness`, wired to the same address, and the packaging extras."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def test_ray_profile_runs_head_worker_and_driver_from_the_harness_image() -> None:
    services = _services()
    ray = {name for name, svc in services.items() if "ray" in svc.get("profiles", [])}
    assert ray == {"head", "worker", "sweep"}
    assert all("profiles" not in services[name] for name in ("harness", "hw"))  # `up` alone starts no cluster
    for name in ray:
        svc = services[name]
        assert svc["image"] == services["harness"]["image"] and svc["build"] == services["harness"]["build"]
        assert svc["entrypoint"][0] == "/opt/pq-harness/docker/entrypoint.sh"
        assert svc["environment"]["HARNESS_CACHE_DIR"] == "/cache"  # one cache path on every node
        assert svc["environment"]["RAY_AUTH_TOKEN"].startswith("${HARNESS_RAY_TOKEN:?")
    head, worker, sweep = (services[n]["entrypoint"][1:] for n in ("head", "worker", "sweep"))
    assert head[:4] == ["ray", "start", "--head", "--port=6379"] and head[-1] == "--block"
    assert worker[:3] == ["ray", "start", "--address=head:6379"] and worker[-1] == "--block"
    assert any(a.startswith("--num-gpus=") for a in worker)
    assert sweep == ["harness", "run", "--executor", "ray", "--address", "head:6379"]


def test_ray_is_an_optional_extra_and_the_tests_install_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[default]") for req in extras["ray"])
    assert any(req.startswith("ray") for req in extras["test"])
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(req.startswith("ray") for req in deps)
