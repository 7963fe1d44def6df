"""Packaging of the Ray extra. The compose profile `ray` (head and worker from the ray image, the driver
in the head's container, token authentication) is tested through the real `docker compose` CLI in
tests/test_compose_cli.py and run as far as this machine allows in tests/test_ray_profile.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ray_is_an_optional_extra_and_the_tests_install_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    # Ray's core only: the executor and `ray start` need neither the dashboard nor Ray Client, whose
    # ~40 extra packages every ray image would have to resolve against its base image
    assert extras["ray"] == ["ray>=2.52"]
    assert any(req.startswith("ray") for req in extras["test"])
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(req.startswith("ray") for req in deps)
