"""Where a result came from: library versions, harness commit, device."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_DISTRIBUTIONS = ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                  "tensorrt-cu12", "tensorrt-cu13", "torch-pruning", "nvidia-ml-py", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def harness_commit() -> str | None:
    """The git commit the harness runs from (with '+dirty' for local changes), if known.

    Without a git checkout (the containers exclude .git), the commit passed in at build time
    (``HARNESS_COMMIT``)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("HARNESS_COMMIT") or None
    return commit + ("+dirty" if dirty else "")


