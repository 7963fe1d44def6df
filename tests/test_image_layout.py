"""docker/layout.sh, the images' filesystem layout, run under a scratch root: relative output paths land
on the mounted volumes, as they do in the clone, never in the image's root-owned /workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "docker" / "layout.sh"
LEGACY_DB = ROOT / "tests" / "data" / "legacy_db" / "results.db"


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A scratch "/" laid out as the images are, with configs/ where compose mounts it."""
    root = tmp_path / "root"
    proc = subprocess.run(["sh", str(LAYOUT), str(root)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    shutil.copytree(ROOT / "configs", root / "workspace" / "configs")
    return root


def test_the_volume_directories_exist_for_any_uid(image_root: Path) -> None:
    for name in ("data", "cache", "results", "torch"):
        mode = (image_root / name).stat().st_mode & 0o7777
        assert mode == 0o1777, (name, oct(mode))


def test_a_configs_relative_out_dir_lands_on_the_results_volume(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = image_root / "workspace"
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HARNESS_OUT_DIR", str(image_root / "results"))  # as in the images: the config's own key wins
    config = load_config(Path("configs/demo.yaml"))
    assert config.out_dir == Path("results/demo")
    out = Path(config.out_dir)
    out.mkdir(parents=True)
    (out / "results.db").write_bytes(b"")
    assert (image_root / "results" / "demo" / "results.db").is_file()  # on the volume
    assert not any(p.is_file() for p in workspace.rglob("*") if not p.is_symlink() and "configs" not in p.parts)


def test_report_and_compare_read_the_results_volume_by_default(image_root: Path) -> None:
    """`harness results show` (like report and compare) defaults to `results`: the volume, from /workspace."""
    shutil.copy(LEGACY_DB, image_root / "results" / "results.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "results", "show"], cwd=image_root / "workspace",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resnet" in proc.stdout.lower() or "tinycnn" in proc.stdout.lower(), proc.stdout
    elsewhere = image_root.parent / "elsewhere"  # without the link: the same command finds nothing
    elsewhere.mkdir()
    empty = subprocess.run([sys.executable, "-m", "harness.cli", "results", "show"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "no results database at results/results.db" in empty.stdout + empty.stderr


def test_data_and_cache_are_the_volumes_too(image_root: Path) -> None:
    workspace = image_root / "workspace"
    assert (workspace / "data").resolve() == (image_root / "data").resolve()
    assert (workspace / ".harness-cache").resolve() == (image_root / "cache").resolve()
    assert (workspace / "results").resolve() == (image_root / "results").resolve()
