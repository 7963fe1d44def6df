"""Atomic file writes: a crash never leaves a torn cache file behind.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask; a cache
file moved into place with that mode is unreadable to the other users sharing a
cache volume.  Every file written here gets ``0o666 & ~umask`` instead,
the mode ``open(path, "w")`` would have given it.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock: there is no getter)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: Path | str, mode: int = 0o666) -> None:
    """Give ``path`` the mode a plainly created file would have: ``mode & ~umask``."""
    os.chmod(path, mode & ~current_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then ``os.replace``.

    The file gets the user's umask (not the temporary file's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        apply_umask(tmp_name)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def atomic_replace(src: Path | str, dst: Path | str) -> None:
    """Move a finished temporary file ``src`` onto ``dst`` (same filesystem) with the user's umask."""
    apply_umask(src)
    os.replace(src, dst)


__all__ = ["apply_umask", "atomic_replace", "atomic_write_bytes", "current_umask"]
