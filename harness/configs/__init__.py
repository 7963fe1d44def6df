"""Configs shipped inside the package, so ``harness demo`` works after a plain ``pip install .``
from any directory. ``configs/demo.yaml`` at the top of the repository is the same file, kept for
users to read and copy (a test checks they are identical)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path


@contextlib.contextmanager
def demo_config() -> Iterator[Path]:
    """A filesystem path to the packaged demo config (valid inside the ``with`` block)."""
    with resources.as_file(resources.files(__name__) / "demo.yaml") as path:
        yield Path(path)
