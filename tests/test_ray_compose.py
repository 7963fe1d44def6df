"""Packaging of the Ray extra. The compose profile `ray` (head, worker, driver from the harness image,
token authentication) is tested through the real `docker compose` CLI in tests/test_compose_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ray_is_an_optional_extra_and_the_tests_install_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[default]") for req in extras["ray"])
    assert any(req.startswith("ray") for req in extras["test"])
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(req.startswith("ray") for req in deps)
