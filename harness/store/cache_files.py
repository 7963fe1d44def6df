"""Cache files that heal: atomic writes with a checksum sidecar, verified on load.

Every cached artifact ``<file>`` gets ``<file>.cache.json`` recording its size, sha256
and a format version (plus the caller's metadata).  On load, :func:`verify` says why a
file cannot be trusted (missing, no sidecar, truncated, sha256 mismatch, other format);
the caller then rebuilds it and reports the one-line note from :func:`rebuilt_note`
through :func:`report_rebuild` (a callback the caller records, or a
:class:`CacheRebuiltWarning`): the library never prints.  Files get the user's umask.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessNote
from harness.store.atomic import atomic_replace, atomic_write_bytes
from harness.store.fingerprint import file_hash

#: Bump when the sidecar layout changes.
CACHE_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".cache.json"

OnRebuild = Callable[[str], None]


class CacheRebuiltWarning(HarnessNote):
    """A damaged cache file was rebuilt (one line: what, where, why)."""


def sidecar_of(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def seal(path: Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Record ``path``'s size and sha256 (and ``meta``) in its sidecar; call after ``path`` is in place."""
    path = Path(path)
    record = {"format_version": CACHE_FORMAT_VERSION, "name": path.name, "size": path.stat().st_size,
              "sha256": file_hash(path), "meta": dict(meta or {})}
    side = sidecar_of(path)
    atomic_write_bytes(side, json.dumps(record, indent=2, sort_keys=True, default=str).encode())
    return side


def write_bytes(path: Path, data: bytes, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``data`` atomically to ``path`` (user's umask) and seal it."""
    atomic_write_bytes(Path(path), data)
    seal(path, meta)
    return Path(path)


def commit(tmp: Path, path: Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Move the finished temporary file ``tmp`` (same folder) onto ``path`` and seal it."""
    atomic_replace(tmp, path)
    seal(path, meta)
    return Path(path)


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata stored with ``path`` ({} when the sidecar is absent or unreadable)."""
    try:
        record = json.loads(sidecar_of(path).read_text())
        return dict(record.get("meta", {})) if isinstance(record, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def verify(path: Path) -> str | None:
    """None when ``path`` is intact; else why not (a few words)."""
    path = Path(path)
    side = sidecar_of(path)
    if not path.exists():
        return "the file is missing"
    if not side.exists():
        return "it has no checksum sidecar"
    try:
        record = json.loads(side.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        size, digest, version = int(record["size"]), str(record["sha256"]), int(record["format_version"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        return f"its sidecar is unreadable ({type(exc).__name__})"
    if version != CACHE_FORMAT_VERSION:
        return f"its sidecar has format {version}, expected {CACHE_FORMAT_VERSION}"
    actual = path.stat().st_size
    if actual != size:
        return f"{'truncated' if actual < size else 'grown'} to {actual} of {size} bytes"
    if file_hash(path) != digest:
        return "its sha256 differs from the recorded one"
    return None


def discard(path: Path) -> None:
    """Delete ``path`` and its sidecar."""
    Path(path).unlink(missing_ok=True)
    sidecar_of(Path(path)).unlink(missing_ok=True)


def rebuilt_note(what: str, path: Path, reason: str) -> str:
    return f"cached {what} {path} was unusable ({reason}); rebuilt it"


def report_rebuild(note: str, on_rebuild: OnRebuild | None) -> None:
    """Hand ``note`` to ``on_rebuild``; without one, issue a :class:`CacheRebuiltWarning`."""
    if on_rebuild is not None:
        on_rebuild(note)
    else:
        warnings.warn(note, CacheRebuiltWarning, stacklevel=3)


def damaged(path: Path) -> str | None:
    """Why an *existing* cache entry (file or sidecar present) cannot be used; None when intact or absent.

    Absent (neither file nor sidecar) is a first build, not damage: no warning.
    """
    path = Path(path)
    if not path.exists() and not sidecar_of(path).exists():
        return None
    return verify(path)


__all__ = ["CACHE_FORMAT_VERSION", "SIDECAR_SUFFIX", "CacheRebuiltWarning", "OnRebuild", "commit", "damaged",
           "discard", "read_meta", "rebuilt_note", "report_rebuild", "seal", "sidecar_of", "verify",
           "write_bytes"]
